//! Snapshot compile (parse + compile) for 10k, 100k and 1M keys, from an AWS CSV key file as
//! large key sets should be given (see docs/config.md).

use std::fmt::Write as _;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

const HEADER: &str = r#"version: 1
apis:
  petstore:
    stages:
      prod:
        throttle: { rate: 1000, burst: 2000 }
usage_plans:
  gold:
    throttle: { rate: 50, burst: 100 }
    quota: { limit: 5000, period: MONTH }
    api_stages: [{ api: petstore, stage: prod }]
api_keys_files: [keys.csv]
"#;

fn write_keys(dir: &Path, n: usize) {
    let mut csv = String::with_capacity(n * 48 + 64);
    csv.push_str("Name,Key,Description,Enabled,UsagePlanIds\n");
    for i in 0..n {
        let _ = writeln!(csv, "key {i},bench-key-{i:012},,TRUE,gold");
    }
    std::fs::write(dir.join("keys.csv"), csv).unwrap();
    std::fs::write(dir.join("plans.yaml"), HEADER).unwrap();
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot compile (CSV keys)");
    group.sample_size(10);
    for n in [10_000usize, 100_000, 1_000_000] {
        let dir = tempfile::tempdir().unwrap();
        write_keys(dir.path(), n);
        let path = dir.path().join("plans.yaml");
        group.bench_function(format!("{n} keys"), |b| {
            b.iter(|| {
                let c = plangate::config::load_file(&path).unwrap();
                assert_eq!(c.snapshot.keys.len(), n);
                c
            })
        });
    }
    group.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
