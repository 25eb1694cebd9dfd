//! `plangate import-aws --from DIR --out DIR [--check]`: an Amazon API Gateway export (the AWS
//! CLI's JSON, docs/migrating.md) as a plangate configuration, `OUT/plans.yaml`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use plangate::migrate;

use super::error::CliError;

/// Arguments of `plangate import-aws`.
#[derive(clap::Args)]
pub struct Args {
    /// The directory of saved AWS CLI output (get-rest-apis.json, get-usage-plans.json, …).
    #[arg(long)]
    from: PathBuf,
    /// Where to write plans.yaml (created if missing).
    #[arg(long, required_unless_present = "check")]
    out: Option<PathBuf>,
    /// Print what would be written, write nothing.
    #[arg(long)]
    check: bool,
}

/// Runs `plangate import-aws`.
pub fn run(a: Args) -> Result<ExitCode, CliError> {
    let imported = match migrate::import_aws(&a.from) {
        Ok(i) => i,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("nothing written ({} errors)", errors.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &imported.warnings {
        eprintln!("warning: {w}");
    }
    let (apis, stages, plans, keys) = imported.counts;
    let summary = format!("{apis} APIs, {stages} stages, {plans} usage plans, {keys} API keys");
    match (&a.out, a.check) {
        (Some(dir), false) => {
            let file = dir.join("plans.yaml");
            write_atomically(dir, &file, imported.yaml.as_bytes()).map_err(|source| {
                CliError::Write {
                    path: file.clone(),
                    source,
                }
            })?;
            eprintln!("wrote {} ({summary})", file.display());
        }
        (None, false) | (_, true) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(imported.yaml.as_bytes());
            eprintln!("--check: nothing written ({summary})");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `file` in `dir` whole or not at all (a running plangate reloads on the rename).
fn write_atomically(
    dir: &std::path::Path,
    file: &std::path::Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // A name no one can guess, created new (O_EXCL: a link planted at that name is an error,
    // never followed).
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".plans.yaml.{}.{nanos:09}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
