//! One training step (forward, backward, clipping, AdamW, EMA) of the `mlp` at batch 1024 on
//! 2-D data and of the small `uvit` at batch 64 on 3x16x16 images, with the default config.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fewstep::config::ConfigBuilder;
use fewstep::denoiser::NetCtx;
use fewstep::run::train::DEFAULTS;
use fewstep::tensor::{normal, seeded_device};
use fewstep::train::{train_step, TrainConfig};
use std::time::Duration;

fn bench_model(c: &mut Criterion, model: &str, row_shape: Vec<usize>, batch: usize, secs: u64) {
    let cfg: TrainConfig = ConfigBuilder::from_defaults(DEFAULTS)
        .unwrap()
        .plugin("denoiser", Some(model))
        .set("batch", Some(batch as i64))
        .set("data", Some("(random rows)"))
        .build()
        .unwrap();
    let dev = seeded_device(0);
    let mut net = cfg
        .denoiser
        .network(&NetCtx {
            dev: dev.clone(),
            row_shape: row_shape.clone(),
            init: true,
        })
        .unwrap();
    let x = normal(&dev, batch, row_shape.iter().product());
    let mut step = 0;
    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements(batch as u64));
    g.measurement_time(Duration::from_secs(secs));
    g.bench_function(format!("{model} {row_shape:?} batch {batch}"), |b| {
        b.iter(|| {
            train_step(&cfg, &dev, net.as_mut(), None, &x, step).unwrap();
            step += 1;
        })
    });
    g.finish();
}

fn train(c: &mut Criterion) {
    bench_model(c, "mlp", vec![2], 1024, 10);
    // Seconds per step on a CPU: ten samples need about a minute.
    bench_model(c, "uvit", vec![3, 16, 16], 64, 60);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = train
}
criterion_main!(benches);
