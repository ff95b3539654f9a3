//! Micro-benchmarks of per-job hot paths: `cargo bench --bench micro`.

use std::hint::black_box;

use bakapara::template::{Context, Quoting, Template};
use criterion::{criterion_group, criterion_main, Criterion};

fn template_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("template");

    let plain = Template::parse("gzip -9 <>").unwrap();
    let args = vec!["dir/a01.txt".to_string()];
    let ctx = Context {
        args: &args,
        fields: None,
        seq: 1,
        slot: 1,
        total: None,
    };
    group.bench_function("expand_plain", |b| {
        b.iter(|| {
            black_box(&plain)
                .expand(black_box(&ctx), Quoting::Shell)
                .unwrap()
        });
    });

    let path_regex = Template::parse("job < <> > </a/b>").unwrap();
    group.bench_function("expand_path_regex", |b| {
        b.iter(|| {
            black_box(&path_regex)
                .expand(black_box(&ctx), Quoting::Shell)
                .unwrap()
        });
    });

    let hostile_args = vec!["a file's \"name\" $(x).txt".to_string()];
    let hostile_ctx = Context {
        args: &hostile_args,
        fields: None,
        seq: 1,
        slot: 1,
        total: None,
    };
    group.bench_function("expand_hostile", |b| {
        b.iter(|| {
            black_box(&plain)
                .expand(black_box(&hostile_ctx), Quoting::Shell)
                .unwrap()
        });
    });

    group.finish();
}

criterion_group!(benches, template_benches);
criterion_main!(benches);
