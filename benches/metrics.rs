//! Host-side metric cost: a gmm64-sized evaluation (must stay fast) and FD at image size.

use criterion::{criterion_group, criterion_main, Criterion};
use fewstep::data::{DataArray, Mixture};
use fewstep::metrics::{evaluate, fd};
use fewstep::seed::seeded;
use rand::Rng;
use rand_distr::StandardNormal;

fn normal(n: usize, d: usize, seed: u64) -> DataArray {
    let mut rng = seeded(seed);
    let values = (0..n * d)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    DataArray::new(values, vec![n, d])
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("metrics");
    g.sample_size(10);
    let (a, b) = (normal(20_000, 64, 1), normal(20_000, 64, 2));
    let k = 10;
    let means = normal(k, 64, 3)
        .values
        .iter()
        .map(|v| f64::from(*v) / 8.0)
        .collect();
    let mix = Mixture::new(vec![1.0; k], means, vec![0.1; k], 64).unwrap();
    g.bench_function("evaluate n=20000 d=64 K=10", |bch| {
        bch.iter(|| evaluate(&a, &b, Some(&mix)).unwrap())
    });
    let (a, b) = (normal(5_000, 768, 4), normal(5_000, 768, 5));
    g.bench_function("fd n=5000 d=768", |bch| bch.iter(|| fd(&a, &b).unwrap()));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
