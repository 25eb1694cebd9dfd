//! The documentation's shell blocks and flag tables agree with the binary: every `plangate
//! serve` flag is in docs/operations.md's table; every shell block parses (`bash -n`), has no
//! line continued into a comment (a `\` before `# …` ends the command there, and the next line
//! runs as a command of its own), and every flag it gives a `plangate` command exists in that
//! command's `--help`.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

/// `plangate WORDS… --help`.
fn help(words: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_plangate"))
        .args(words)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long flags a `--help` text names.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("-h, ").unwrap_or(l);
            let l = l.split(", ").last().unwrap_or(l);
            l.starts_with("--")
                .then(|| l.split([' ', '=', ',']).next().unwrap_or("").to_owned())
        })
        .collect()
}

#[test]
fn every_serve_flag_is_in_the_operations_table() {
    let doc = std::fs::read_to_string(common::root().join("docs/operations.md")).unwrap();
    let missing: Vec<String> = flags(&help(&["serve"]))
        .into_iter()
        .filter(|f| f != "--help" && !doc.contains(&format!("`{f}")))
        .collect();
    assert!(missing.is_empty(), "not in docs/operations.md: {missing:?}");
}

/// The ```sh blocks of a Markdown text, with their first line's number.
fn shell_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        match &mut open {
            None if line.trim_start().starts_with("```sh")
                || line.trim_start().starts_with("```bash") =>
            {
                open = Some((n + 2, String::new()))
            }
            Some(_) if line.trim_start().starts_with("```") => out.push(open.take().unwrap()),
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_shell_block_of_the_docs_parses_and_names_real_flags() {
    let root = common::root();
    let mut files = vec![root.join("README.md")];
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    let mut helps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut commands = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.strip_prefix(&root).unwrap().display().to_string();
        for (line, block) in shell_blocks(&text) {
            let syntax = Command::new("bash")
                .args(["-n", "-c", &block])
                .output()
                .unwrap();
            if !syntax.status.success() {
                problems.push(format!(
                    "{name}:{line}: bash -n: {}",
                    String::from_utf8_lossy(&syntax.stderr).trim()
                ));
            }
            // Continuation lines joined; a continuation into a comment leaves a line that
            // starts with a flag.
            let joined = block.replace("\\\n", " ");
            for cmd in joined.lines() {
                let cmd = cmd.trim();
                if cmd.starts_with("--") {
                    problems.push(format!(
                        "{name}:{line}: `{cmd}` runs as a command of its own (a `\\` before a `#` comment above it?)"
                    ));
                }
                let words: Vec<&str> = cmd.split_whitespace().collect();
                let Some(at) = words
                    .iter()
                    .position(|w| *w == "plangate" || w.ends_with("/plangate"))
                else {
                    continue;
                };
                let Some(sub) = words.get(at + 1).filter(|s| !s.starts_with('-')) else {
                    continue;
                };
                // A command of a command (`plangate keys create`) has flags of its own.
                let (command, rest) = match words
                    .get(at + 2)
                    .filter(|w| !w.starts_with('-') && !flags(&help(&[sub, w])).is_empty())
                {
                    Some(sub2) => (vec![*sub, *sub2], at + 3),
                    None => (vec![*sub], at + 2),
                };
                let known = helps
                    .entry(command.join(" "))
                    .or_insert_with(|| flags(&help(&command)));
                if known.is_empty() {
                    continue; // not a plangate command (a word in prose)
                }
                commands += 1;
                let sub = command.join(" ");
                for w in &words[rest..] {
                    if *w == "#" || w.starts_with('#') {
                        break;
                    }
                    let flag = w.split('=').next().unwrap_or(w);
                    if flag.starts_with("--") && flag.len() > 2 && !known.iter().any(|k| k == flag)
                    {
                        problems.push(format!("{name}:{line}: `plangate {sub}` has no {flag}"));
                    }
                }
            }
        }
    }
    assert!(
        commands > 10,
        "only {commands} plangate commands found in the docs"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
