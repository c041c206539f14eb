//! Loader throughput on a 1 GB uint8 image file (3x32x32, chunked as `fewstep data` writes it),
//! beside a raw sequential read of the same file in the same run; both from the page cache.
//! Goal: the loader (read, shuffle, batch) at >= 70% of the raw read. uint8 batches stay bytes
//! (scaled to [-1, 1] on the device); the last line adds float32 scaling on the host, which
//! writes four bytes per byte read, to show what a CPU consumer pays for it.
//!
//! The file is made once as /tmp/fewstep-bench-loader-1g.h5 (FEWSTEP_BENCH_FILE overrides).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use fewstep::data::h5::write_with;
use fewstep::data::write::{chunk_rows, RowWriter};
use fewstep::data::{Loader, LoaderConfig};
use fewstep::run::bench::raw_read;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROW: [usize; 3] = [3, 32, 32];
/// Rows of the bench file: 327680 x 3072 bytes = 1.007e9 bytes under `cargo bench`; 8192 rows
/// (25 MB) when `cargo test --all-targets` only checks that the bench runs.
fn rows() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        327_680
    } else {
        8_192
    }
}
const BATCH: usize = 256;

fn bench_file() -> PathBuf {
    let path = std::env::var_os("FEWSTEP_BENCH_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/fewstep-bench-loader-{}.h5", rows())));
    let d: usize = ROW.iter().product();
    let ok = hdf5::File::open(&path)
        .and_then(|f| f.dataset("data"))
        .map(|ds| ds.shape() == [rows(), ROW[0], ROW[1], ROW[2]])
        .unwrap_or(false);
    if !ok {
        let need = (rows() * d) as u64 * 2;
        let free = free_bytes(path.parent().unwrap_or(Path::new("/tmp")));
        assert!(
            free.is_none_or(|f| f > need),
            "{} needs {need} free bytes, only {free:?}",
            path.display()
        );
        eprintln!("writing {} ({} bytes of /data)", path.display(), rows() * d);
        write_with(&path, |file| {
            let mut w = RowWriter::create::<u8>(file, &[rows(), ROW[0], ROW[1], ROW[2]], None)?;
            let block = chunk_rows(rows(), d);
            let mut state = 0x2545_F491_4F6C_DD1Du64;
            let mut buf = vec![0u8; block * d];
            for start in (0..rows()).step_by(block) {
                let k = block.min(rows() - start);
                for b in buf[..k * d].iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *b = (state >> 56) as u8;
                }
                w.write(&buf[..k * d])?;
            }
            w.finish(&[("source", "benches/loader.rs".into())])
        })
        .expect("writing the bench file");
    }
    path
}

/// Free bytes on the file system holding `dir`, from `df`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .args(["-Pk"])
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn loader(c: &mut Criterion) {
    let path = bench_file();
    let bytes = (rows() * ROW.iter().product::<usize>()) as u64;
    raw_read(&path).unwrap(); // into the page cache

    let mut g = c.benchmark_group("loader_1gb_u8");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(bytes));

    g.bench_function("raw_sequential_read", |b| {
        b.iter(|| raw_read(&path).unwrap())
    });

    let cfg = LoaderConfig {
        in_memory_max_bytes: 0,
        ..LoaderConfig::new(BATCH, 0)
    };
    let one = LoaderConfig {
        workers: 1,
        ..cfg.clone()
    };
    let runs = [
        (
            format!("loader_epoch_{}_workers", cfg.workers),
            cfg.clone(),
            true,
        ),
        ("loader_epoch_1_worker".to_string(), one, true),
        ("loader_epoch_no_recycle".to_string(), cfg.clone(), false),
        (
            "loader_epoch_pread_windows".to_string(),
            LoaderConfig {
                map_file: false,
                ..cfg.clone()
            },
            true,
        ),
    ];
    for (name, cfg, recycle) in runs {
        let mapped = cfg.map_file;
        let mut l = Loader::open(&path, cfg).unwrap();
        assert!(!l.in_memory());
        assert_eq!(l.is_mapped(), mapped);
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..rows() / BATCH {
                    let batch = l.next_batch().unwrap();
                    black_box(batch.values.len());
                    if recycle {
                        l.recycle(batch);
                    }
                }
            })
        });
    }
    // What a CPU trainer pays on top: scaling each batch to float32 on the consuming thread
    // (a GPU trainer scales on the device instead).
    let mut l = Loader::open(&path, cfg).unwrap();
    g.bench_function("loader_epoch_then_f32_on_host", |b| {
        b.iter(|| {
            for _ in 0..rows() / BATCH {
                let batch = l.next_batch().unwrap();
                let x = batch.values.to_f32();
                black_box(x[x.len() - 1]);
                l.recycle(batch);
            }
        })
    });
    g.finish();
}

/// What moving the uint8 -> [-1, 1] scaling to the device costs a CPU trainer per batch of
/// 256 3x32x32 images, beside handing over a batch that is already float32.
fn to_device(c: &mut Criterion) {
    use fewstep::data::BatchValues;
    use fewstep::tensor::{batch_to_device, seeded_device};
    let dev = seeded_device(0);
    let d: usize = ROW.iter().product();
    let bytes: Vec<u8> = (0..BATCH * d).map(|i| (i * 31 % 256) as u8).collect();
    let floats = BatchValues::U8(bytes.clone()).to_f32();
    let mut g = c.benchmark_group("batch_to_device_256x3x32x32");
    g.bench_function("u8_scaled_by_dfdx", |b| {
        b.iter(|| batch_to_device(&dev, BatchValues::U8(bytes.clone()), BATCH, d))
    });
    g.bench_function("f32_as_is", |b| {
        b.iter(|| batch_to_device(&dev, BatchValues::F32(floats.clone()), BATCH, d))
    });
    g.finish();
}

criterion_group!(benches, loader, to_device);
criterion_main!(benches);
