//! One step t = 0.5 -> 0.375 of every registered integrator at batch 4096 x 64 with the exact
//! gmm64 denoiser, beside the bare denoiser evaluation it is built on.

use criterion::{criterion_group, criterion_main, Criterion};
use fewstep::config::plugin_from_toml;
use fewstep::data::builtin::mixtures;
use fewstep::data::builtin::write_set;
use fewstep::denoiser::{BuildCtx, Denoiser, DenoiserSpec, Level};
use fewstep::integrator::{Integrator, StepCtx};
use fewstep::registry::{kind, names};
use fewstep::schedule::Schedule;
use fewstep::tensor::{normal, seeded_device};
use std::time::Duration;

const BATCH: usize = 4096;
const T: f64 = 0.5;
const S: f64 = 0.5 - 1.0 / 8.0;

fn integrators(c: &mut Criterion) {
    let dev = seeded_device(0);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gmm64.h5");
    write_set(&data, &mixtures::make("gmm64", 16, 0).unwrap(), "bench").unwrap();
    let spec: Box<dyn DenoiserSpec> = plugin_from_toml("name = \"gmm\"").unwrap();
    let gmm: Box<dyn Denoiser> = spec
        .build(&BuildCtx {
            dev: dev.clone(),
            data: Some(data),
            checkpoint: None,
        })
        .unwrap();
    let schedule: Box<dyn Schedule> = plugin_from_toml("name = \"cosine\"").unwrap();
    let z = normal(&dev, BATCH, gmm.dim());

    let mut group = c.benchmark_group(format!("step_{BATCH}x{}", gmm.dim()));
    let level = Level::at(schedule.as_ref(), T);
    group.bench_function("denoise (gmm64)", |b| {
        b.iter(|| gmm.denoise(&z, &level).unwrap())
    });
    group.bench_function("posterior_variance (gmm64)", |b| {
        b.iter(|| gmm.posterior_variance(&z, &level).unwrap().unwrap())
    });
    for name in names(kind::INTEGRATOR) {
        let integrator: Box<dyn Integrator> =
            plugin_from_toml(&format!("name = \"{name}\"")).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut ctx = StepCtx::new(&dev, schedule.as_ref(), gmm.as_ref());
                integrator.step(&mut ctx, z.clone(), T, S).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = integrators
}
criterion_main!(benches);
