//! Sampling, scoring and dataset writing in bounded memory (issue 21): the streamed file holds
//! the samples the whole-array workflow drew, a failed stream leaves no file, and streamed
//! metrics of a file equal the in-memory ones.

use fewstep::config::Overrides;
use fewstep::data::builtin::{make_set, write_builtin};
use fewstep::data::{read_data, write_data, DataArray, DataFile, Mixture};
use fewstep::denoiser::BuildCtx;
use fewstep::integrator::RowNoise;
use fewstep::metrics::evaluate;
use fewstep::run::evaluate::Reference;
use fewstep::run::sample::{sample_to_file, SampleConfig};
use fewstep::sampling;
use fewstep::schedule::uniform_grid;
use fewstep::tensor::{batch_from_vec, normal, seeded_device};
use std::path::Path;

fn config(data: &Path, out: &Path, integrator: &str, n: usize, batch: usize) -> SampleConfig {
    let o = Overrides::default()
        .plugin("integrator", Some(integrator))
        .path("data", Some(data))
        .path("out", Some(out))
        .set("n", Some(n as i64))
        .set("batch", Some(batch as i64))
        .set("steps", Some(4))
        .set("seed", Some(11));
    SampleConfig::resolve(None, &o).unwrap()
}

/// The samples as `fewstep sample` drew them before it streamed: all of z_1 drawn first from
/// the seeded device, then the batches in order on that device.
fn whole_array_samples(cfg: &SampleConfig) -> Vec<f32> {
    let dev = seeded_device(cfg.seed);
    let den = cfg
        .denoiser
        .build(&BuildCtx {
            dev: dev.clone(),
            data: cfg.data.clone(),
            checkpoint: None,
        })
        .unwrap();
    let dim = den.dim();
    let z1 = normal(&dev, cfg.n, dim).as_vec();
    let mut out = Vec::new();
    for (i, chunk) in z1.chunks(cfg.batch * dim).enumerate() {
        let rows = chunk.len() / dim;
        let s = sampling::sample(
            &dev,
            cfg.schedule.as_ref(),
            cfg.integrator.as_ref(),
            den.as_ref(),
            batch_from_vec(&dev, chunk.to_vec(), rows, dim),
            &uniform_grid(cfg.steps),
            RowNoise {
                seed: cfg.seed,
                first_row: (i * cfg.batch) as u64,
            },
        )
        .unwrap();
        out.extend(s.samples.as_vec());
    }
    out
}

#[test]
fn streamed_samples_are_the_whole_array_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    write_builtin(&data, "ring8", 100, 0, "test").unwrap();
    // DDPM draws its step noise from the sampling device, after z_1: that order is kept too.
    for integrator in ["ddim", "ddpm"] {
        let out = dir.path().join(format!("{integrator}.h5"));
        let cfg = config(&data, &out, integrator, 50, 16);
        let written = sample_to_file(&cfg).unwrap();
        assert_eq!((written.shape.clone(), written.nfe), (vec![50, 2], 4));
        let got = read_data(&out).unwrap();
        let want = whole_array_samples(&cfg);
        assert_eq!(
            got.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{integrator}"
        );
        let file = hdf5::File::open(&out).unwrap();
        let ds = file.dataset("data").unwrap();
        assert!(ds.chunk().is_some(), "written as a chunked dataset");
        assert_eq!(
            fewstep::data::h5::read_str_attr(&ds, "nfe")
                .unwrap()
                .as_deref(),
            Some("4")
        );
    }
}

#[test]
fn a_failed_stream_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("ring8.h5");
    write_builtin(&data, "ring8", 100, 0, "test").unwrap();
    // Noise whose row 30 is NaN: the first batches are written before the stream fails.
    let mut z = vec![0.5f32; 40 * 2];
    z[61] = f32::NAN;
    let noise = dir.path().join("noise.h5");
    write_data(&noise, &DataArray::new(z, vec![40, 2]), &vec![]).unwrap();
    let out = dir.path().join("out.h5");
    let mut cfg = config(&data, &out, "ddim", 40, 10);
    cfg.noise = Some(noise);
    let err = format!("{:#}", sample_to_file(&cfg).err().unwrap());
    assert!(err.contains("non-finite") && err.contains("61"), "{err}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["noise.h5", "ring8.h5"]);
}

#[test]
fn made_mixtures_are_written_in_blocks_with_the_drawn_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gmm64.h5");
    // 5000 rows of 64 floats: two blocks of 4096 rows.
    let shape = write_builtin(&path, "gmm64", 5000, 3, "test").unwrap();
    let want = make_set("gmm64", 5000, 3).unwrap();
    assert_eq!(shape, want.data.shape);
    assert_eq!(read_data(&path).unwrap(), want.data);
    let file = hdf5::File::open(&path).unwrap();
    let labels: Vec<i64> = file.dataset("labels").unwrap().read_raw().unwrap();
    assert_eq!(Some(labels), want.labels);
    let m = Mixture::read(&path).unwrap().unwrap();
    assert_eq!(Some(m.weights), want.mixture.map(|m| m.weights));
}

#[test]
fn metrics_of_a_file_read_in_blocks_equal_the_in_memory_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (s, r) = (dir.path().join("s.h5"), dir.path().join("r.h5"));
    write_builtin(&s, "gmm64", 3000, 1, "test").unwrap();
    write_builtin(&r, "gmm64", 1000, 2, "test").unwrap();
    let reference = Reference::read(&r).unwrap();
    let samples = read_data(&s).unwrap();
    let want = evaluate(&samples, &reference.data, reference.mixture.as_ref()).unwrap();
    let got = reference.score_file(&DataFile::open(&s).unwrap()).unwrap();
    assert!(
        (got.fd - want.fd).abs() <= 1e-9 * want.fd,
        "{got:?} vs {want:?}"
    );
    assert_eq!(
        (got.sw2, got.nll, got.mode_kl),
        (want.sw2, want.nll, want.mode_kl)
    );
}
