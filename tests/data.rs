//! Datasets: the streaming loader, its validation, importers, shapes sets, inspect, h5py files.

mod common;

use common::npy;

use fewstep::data::builtin::shapes;
use fewstep::data::import::{import_arrays, import_png, Format, ImportOptions, Layout};
use fewstep::data::inspect::{inspect, write_grid};
use fewstep::data::{BatchValues, HostBatch, Loader, LoaderConfig};
use std::io::Write;
use std::path::{Path, PathBuf};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// HDF5 holds a `flock` on open files through descriptors that a spawned child inherits, so
/// the CLI test (which spawns `fewstep`) runs alone: it takes this lock for writing, the other
/// tests for reading.
static SPAWN: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SPAWN.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes `/data` (chunked along N by `chunk` rows when given) and optional `/labels`.
fn write_h5<T: hdf5::H5Type>(
    path: &Path,
    shape: &[usize],
    values: &[T],
    chunk: Option<usize>,
    labels: Option<&[i64]>,
) {
    write_h5_with(path, shape, values, chunk, false, labels)
}

/// [`write_h5`], deflate-compressed when `deflate` (needs `chunk`).
fn write_h5_with<T: hdf5::H5Type>(
    path: &Path,
    shape: &[usize],
    values: &[T],
    chunk: Option<usize>,
    deflate: bool,
    labels: Option<&[i64]>,
) {
    let file = hdf5::File::create(path).unwrap();
    let mut b = file.new_dataset::<T>();
    if let Some(c) = chunk {
        let mut cs = shape.to_vec();
        cs[0] = c;
        b = b.chunk(cs);
    }
    if deflate {
        b = b.deflate(3);
    }
    let ds = b.shape(shape.to_vec()).create("data").unwrap();
    let arr = ndarray::ArrayView::from_shape(ndarray::IxDyn(shape), values).unwrap();
    ds.write(&arr).unwrap();
    if let Some(l) = labels {
        file.new_dataset_builder()
            .with_data(l)
            .create("labels")
            .unwrap();
    }
}

/// Rows `[i, -i]` (float32) so each row names itself; labels `10 i + 3`.
fn id_file(dir: &Path, n: usize, chunk: Option<usize>) -> PathBuf {
    id_file_with(dir, n, chunk, false)
}

fn id_file_with(dir: &Path, n: usize, chunk: Option<usize>, deflate: bool) -> PathBuf {
    let path = dir.join(format!("ids-{n}-{chunk:?}-{deflate}.h5"));
    let values: Vec<f32> = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| 10 * i + 3).collect();
    write_h5_with(&path, &[n, 2], &values, chunk, deflate, Some(&labels));
    path
}

/// A config that streams in blocks of 37 rows (one chunk) with windows of 3 blocks.
fn streaming(batch: usize, seed: u64) -> LoaderConfig {
    LoaderConfig {
        in_memory_max_bytes: 0,
        block_bytes: 1,
        shuffle_bytes: 3 * 37 * 8,
        ..LoaderConfig::new(batch, seed)
    }
}

/// Row ids of the next `k` batches, checking each row against its label.
fn take_ids(l: &mut Loader, k: usize) -> Vec<usize> {
    let mut ids = Vec::new();
    for _ in 0..k {
        let b = l.next_batch().unwrap();
        assert_eq!(b.values.len(), b.rows * 2);
        let labels = b.labels.as_ref().expect("labels stream with the rows");
        for (r, lab) in b.values.to_f32().chunks_exact(2).zip(labels) {
            assert_eq!(r[1], -r[0], "row is intact");
            assert_eq!(*lab, 10 * r[0] as i64 + 3, "label belongs to its row");
            ids.push(r[0] as usize);
        }
        l.recycle(b);
    }
    ids
}

#[test]
fn epochs_cover_every_row_once_streaming_and_in_memory() {
    let _g = shared();
    let dir = tmp();
    let n = 1000; // not a multiple of the batch: batches span epoch boundaries
                  // Contiguous and chunked files are read directly, compressed ones through HDF5.
    let files = [
        id_file_with(dir.path(), n, None, false),
        id_file_with(dir.path(), n, Some(37), false),
        id_file_with(dir.path(), n, Some(37), true),
    ];
    let direct = |p: &Path| {
        let df = fewstep::data::source::open(p).unwrap();
        fewstep::data::source::RowReader::new(df)
            .unwrap()
            .is_direct()
    };
    assert_eq!(files.each_ref().map(|p| direct(p)), [true, true, false]);
    let pread = |cfg: LoaderConfig| LoaderConfig {
        map_file: false,
        ..cfg
    };
    for (path, cfg) in files.iter().flat_map(|p| {
        [
            (p, streaming(64, 5)),
            (p, pread(streaming(64, 5))),
            (p, LoaderConfig::new(64, 5)),
        ]
    }) {
        let mut l = Loader::open(path, cfg.clone()).unwrap();
        assert_eq!(l.in_memory(), cfg.in_memory_max_bytes > 0);
        // Unfiltered files stream from the mapped file unless told to read windows.
        let mapped = direct(path) && !l.in_memory() && cfg.map_file;
        assert_eq!(l.is_mapped(), mapped, "{path:?} {cfg:?}");
        assert!(l.has_labels());
        assert_eq!((l.len(), l.row_dim(), l.row_shape()), (n, 2, vec![2]));
        let ids = take_ids(&mut l, 3 * n / 64 + 1);
        for epoch in ids.chunks_exact(n).take(3) {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "{path:?} {cfg:?}");
        }
        assert_eq!(l.epoch(), 3);
    }
}

#[test]
fn same_seed_same_batches_other_seed_differs() {
    let _g = shared();
    let dir = tmp();
    let path = id_file(dir.path(), 500, Some(37));
    let compressed = id_file_with(dir.path(), 500, Some(37), true);
    for cfg in [streaming(32, 1), LoaderConfig::new(32, 1)] {
        let a = take_ids(&mut Loader::open(&path, cfg.clone()).unwrap(), 40);
        // The same batches with any number of converter threads, and through HDF5's reads.
        let one = LoaderConfig {
            workers: 1,
            ..cfg.clone()
        };
        let b = take_ids(&mut Loader::open(&path, one).unwrap(), 40);
        // ... whether rows come from the mapped file or from windows read with pread.
        let pread = LoaderConfig {
            map_file: false,
            ..cfg.clone()
        };
        assert_eq!(a, take_ids(&mut Loader::open(&path, pread).unwrap(), 40));
        let three = LoaderConfig {
            workers: 3,
            ..cfg.clone()
        };
        assert_eq!(
            a,
            take_ids(&mut Loader::open(&compressed, three).unwrap(), 40)
        );
        let other = LoaderConfig { seed: 2, ..cfg };
        let c = take_ids(&mut Loader::open(&path, other).unwrap(), 40);
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Epochs differ from each other too.
        assert_ne!(a[..500], a[500..1000]);
    }
}

#[test]
fn shuffle_mixes_blocks_and_rows() {
    let _g = shared();
    let dir = tmp();
    let n = 2000;
    let path = id_file(dir.path(), n, Some(37));
    for cfg in [streaming(50, 3), LoaderConfig::new(50, 3)] {
        let mut l = Loader::open(&path, cfg.clone()).unwrap();
        let ids = take_ids(&mut l, n / 50);
        // Neighbours in the file are rarely neighbours in the stream.
        let adjacent = ids.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(adjacent < n / 50, "{adjacent} adjacent pairs: {cfg:?}");
        // The first batch mixes several blocks, and blocks are not visited in file order.
        let mut blocks: Vec<usize> = ids[..50].iter().map(|i| i / 37).collect();
        blocks.sort_unstable();
        blocks.dedup();
        assert!(blocks.len() >= 3, "first batch from blocks {blocks:?}");
        assert!(ids[..50].iter().any(|&i| i >= 3 * 37), "{cfg:?}");
    }
}

#[test]
fn uint8_rows_scale_to_minus_one_one() {
    let _g = shared();
    let dir = tmp();
    let path = dir.path().join("u8.h5");
    let values: Vec<u8> = (0..=255).collect();
    write_h5(&path, &[256, 1], &values, Some(16), None);
    let mut l = Loader::open(&path, streaming(256, 0)).unwrap();
    let b = l.next_batch().unwrap();
    assert!(b.labels.is_none());
    assert!(
        matches!(b.values, BatchValues::U8(_)),
        "uint8 travels as bytes"
    );
    let mut got: Vec<f32> = b.values.to_f32();
    got.sort_by(f32::total_cmp);
    for (v, g) in got.iter().enumerate() {
        assert_eq!(*g, v as f32 / 127.5 - 1.0);
    }
    assert_eq!((got[0], got[255]), (-1.0, 1.0));
    // Scaled on the device: bit for bit the host's decoding, row order kept.
    let dev = fewstep::tensor::seeded_device(0);
    let on_device = fewstep::tensor::batch_to_device(&dev, b.values.clone(), 256, 1);
    assert_eq!(on_device.as_vec(), b.values.to_f32());
}

fn all_batches(l: &mut Loader, k: usize) -> Vec<anyhow::Result<HostBatch>> {
    (0..k).map(|_| l.next_batch()).collect()
}

#[test]
fn batch_with_nan_or_inf_is_refused_naming_the_row() {
    let _g = shared();
    let dir = tmp();
    for (bad, what) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        let path = dir.path().join(format!("bad-{}.h5", bad.is_nan()));
        let mut values: Vec<f32> = (0..400).map(|i| i as f32).collect();
        values[2 * 123 + 1] = bad; // row 123, element 1
        write_h5(&path, &[200, 2], &values, Some(20), None);
        for cfg in [streaming(20, 0), LoaderConfig::new(20, 0)] {
            let mut l = Loader::open(&path, cfg).unwrap();
            let results = all_batches(&mut l, 20); // two epochs
            let errors: Vec<String> = results
                .iter()
                .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
                .collect();
            assert_eq!(errors.len(), 2, "one refused batch per epoch");
            for e in &errors {
                assert!(e.contains("bad-") && e.contains("row 123"), "{e}");
                assert!(e.contains(&format!("holds {what} at element 1")), "{e}");
                assert!(e.contains("refused") && e.contains("inspect"), "{e}");
            }
            for b in results.iter().flatten() {
                assert!(b.values.to_f32().iter().all(|v| v.is_finite()));
            }
        }
    }
}

fn open_err(path: &Path, cfg: LoaderConfig) -> String {
    match Loader::open(path, cfg) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn validation_errors_name_file_dataset_and_fix() {
    let _g = shared();
    let dir = tmp();
    let p = |name: &str| dir.path().join(name);

    let f = hdf5::File::create(p("nodata.h5")).unwrap();
    f.new_dataset_builder()
        .with_data(&[1.0f32, 2.0])
        .create("samples")
        .unwrap();
    drop(f);
    let e = open_err(&p("nodata.h5"), LoaderConfig::new(1, 0));
    assert!(e.contains("nodata.h5") && e.contains("no `/data`"), "{e}");
    assert!(
        e.contains("/samples") && e.contains("fewstep data import"),
        "{e}"
    );

    let e = open_err(&p("missing.h5"), LoaderConfig::new(1, 0));
    assert!(
        e.contains("missing.h5") && e.contains("no such file"),
        "{e}"
    );

    write_h5(&p("flat.h5"), &[10], &[0f32; 10], None, None);
    let e = open_err(&p("flat.h5"), LoaderConfig::new(1, 0));
    assert!(
        e.contains("`/data` has shape [10]") && e.contains("[N, 1]"),
        "{e}"
    );

    write_h5(&p("img.h5"), &[10, 3, 4, 4], &[0u8; 480], None, None);
    let want = LoaderConfig {
        expect_row_shape: Some(vec![3, 8, 8]),
        ..LoaderConfig::new(2, 0)
    };
    let e = open_err(&p("img.h5"), want);
    assert!(e.contains("img.h5") && e.contains("[3, 4, 4]"), "{e}");
    assert!(
        e.contains("expects [3, 8, 8]") && e.contains("configure the model"),
        "{e}"
    );
    // A flat model input of the same size is fine.
    let flat = LoaderConfig {
        expect_row_shape: Some(vec![48]),
        ..LoaderConfig::new(2, 0)
    };
    Loader::open(&p("img.h5"), flat).unwrap();

    write_h5(&p("int.h5"), &[4, 2], &[0i32; 8], None, None);
    let e = open_err(&p("int.h5"), LoaderConfig::new(1, 0));
    assert!(
        e.contains("int.h5") && e.contains("`/data` has dtype int32"),
        "{e}"
    );
    assert!(
        e.contains("float32, float64 and uint8") && e.contains("astype"),
        "{e}"
    );

    let e = open_err(&p("img.h5"), LoaderConfig::new(11, 0));
    assert!(
        e.contains("img.h5") && e.contains("10 rows, fewer than the batch size 11"),
        "{e}"
    );
    assert!(e.contains("lower the batch size"), "{e}");

    write_h5(&p("labels.h5"), &[4, 2], &[0f32; 8], None, Some(&[1, 2, 3]));
    let e = open_err(&p("labels.h5"), LoaderConfig::new(1, 0));
    assert!(
        e.contains("labels.h5") && e.contains("`/labels` has shape [3]"),
        "{e}"
    );
    assert!(
        e.contains("4 rows") && e.contains("one integer label per row"),
        "{e}"
    );
}

fn npz(path: &Path, members: &[(&str, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        z.start_file(format!("{name}.npy"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn read_u8(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let ds = hdf5::File::open(path).unwrap().dataset("data").unwrap();
    (ds.shape(), ds.read_raw::<u8>().unwrap())
}

fn read_labels(path: &Path) -> Vec<i64> {
    let f = hdf5::File::open(path).unwrap();
    f.dataset("labels").unwrap().read_raw::<i64>().unwrap()
}

/// Pixel (c, y, x) of image i in a 3x4x5 test set.
fn px(i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((i * 37 + c * 11 + y * 5 + x * 3) % 256) as u8
}

fn chw_images(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..5 {
                    v.push(px(i, c, y, x));
                }
            }
        }
    }
    v
}

fn hwc_images(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        for y in 0..4 {
            for x in 0..5 {
                for c in 0..3 {
                    v.push(px(i, c, y, x));
                }
            }
        }
    }
    v
}

fn opts(shape: Option<&[usize]>, layout: Option<Layout>) -> ImportOptions {
    ImportOptions {
        shape: shape.map(<[usize]>::to_vec),
        layout,
        compress: None,
        source: "test".into(),
    }
}

#[test]
fn npy_import_round_trips_layouts_and_dtypes() {
    let _g = shared();
    let dir = tmp();
    let d = dir.path();
    let out = d.join("out.h5");
    let chw = chw_images(7);
    // Flat channel-planar rows (the downsampled-ImageNet layout).
    std::fs::write(d.join("flat.npy"), npy("|u1", &[7, 60], &chw)).unwrap();
    let s = import_arrays(
        Format::Npy,
        &[d.join("flat.npy")],
        &out,
        &opts(Some(&[3, 4, 5]), None),
    )
    .unwrap();
    assert!(!s.transposed);
    assert_eq!(read_u8(&out), (vec![7, 3, 4, 5], chw.clone()));
    // Flat interleaved rows need --layout hwc.
    std::fs::write(d.join("flathwc.npy"), npy("|u1", &[7, 60], &hwc_images(7))).unwrap();
    let o = opts(Some(&[3, 4, 5]), Some(Layout::Hwc));
    import_arrays(Format::Npy, &[d.join("flathwc.npy")], &out, &o).unwrap();
    assert_eq!(read_u8(&out), (vec![7, 3, 4, 5], chw.clone()));
    // [N, H, W, C] is recognised by its shape and transposed.
    std::fs::write(d.join("hwc.npy"), npy("|u1", &[7, 4, 5, 3], &hwc_images(7))).unwrap();
    let s = import_arrays(
        Format::Npy,
        &[d.join("hwc.npy")],
        &out,
        &opts(Some(&[3, 4, 5]), None),
    )
    .unwrap();
    assert!(s.transposed);
    assert_eq!(read_u8(&out), (vec![7, 3, 4, 5], chw.clone()));
    // float64 feature rows keep their shape and become float32.
    let f: Vec<f64> = (0..12).map(|i| i as f64 * 0.5 - 2.0).collect();
    let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(d.join("f.npy"), npy("<f8", &[4, 3], &bytes)).unwrap();
    import_arrays(Format::Npy, &[d.join("f.npy")], &out, &opts(None, None)).unwrap();
    let ds = hdf5::File::open(&out).unwrap().dataset("data").unwrap();
    assert_eq!(ds.shape(), vec![4, 3]);
    let got = ds.read_raw::<f32>().unwrap();
    assert_eq!(got, f.iter().map(|&v| v as f32).collect::<Vec<_>>());
    // A --shape of the wrong size is refused.
    let e = import_arrays(
        Format::Npy,
        &[d.join("flat.npy")],
        &out,
        &opts(Some(&[3, 5, 5]), None),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--shape 3,5,5 holds 75") && e.contains("60 values"),
        "{e}"
    );
}

#[test]
fn npz_import_concatenates_with_labels_and_compresses() {
    let _g = shared();
    let dir = tmp();
    let d = dir.path();
    let chw = chw_images(9);
    let labels: Vec<i64> = (0..9).map(|i| 100 + i).collect();
    let lab = |r: std::ops::Range<usize>| -> Vec<u8> {
        labels[r].iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    npz(
        &d.join("a.npz"),
        &[
            ("data", npy("|u1", &[5, 60], &chw[..5 * 60])),
            ("labels", npy("<i8", &[5], &lab(0..5))),
            ("mean", npy("<f4", &[1], &[0; 4])),
        ],
    );
    npz(
        &d.join("b.npz"),
        &[
            ("data", npy("|u1", &[4, 60], &chw[5 * 60..])),
            ("labels", npy("<i8", &[4], &lab(5..9))),
        ],
    );
    let out = d.join("out.h5");
    let o = ImportOptions {
        compress: Some(4),
        ..opts(Some(&[3, 4, 5]), None)
    };
    let s = import_arrays(Format::Npz, &[d.join("a.npz"), d.join("b.npz")], &out, &o).unwrap();
    assert!(s.labels);
    assert_eq!(read_u8(&out), (vec![9, 3, 4, 5], chw));
    assert_eq!(read_labels(&out), labels);
    let r = inspect(&out).unwrap();
    assert!(
        r.info.filters.iter().any(|f| f.contains("eflate")),
        "{:?}",
        r.info.filters
    );
    // The imported file feeds the loader, labels aligned with images.
    let mut l = Loader::open(&out, LoaderConfig::new(9, 0)).unwrap();
    let b = l.next_batch().unwrap();
    for (row, label) in b.values.to_f32().chunks_exact(60).zip(b.labels.unwrap()) {
        let i = (label - 100) as usize;
        assert_eq!(row[0], px(i, 0, 0, 0) as f32 / 127.5 - 1.0);
    }
    // Missing `data` member: the error lists what is there.
    npz(&d.join("bad.npz"), &[("x", npy("|u1", &[2, 2], &[0; 4]))]);
    let e = import_arrays(Format::Npz, &[d.join("bad.npz")], &out, &o)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no `data` array") && e.contains("x.npy"), "{e}");
}

#[test]
fn png_folder_import_round_trips_with_class_labels() {
    let _g = shared();
    let dir = tmp();
    let src = dir.path().join("pngs");
    let hwc = hwc_images(4);
    for (i, img) in hwc.chunks_exact(60).enumerate() {
        let class = if i < 2 { "cat" } else { "dog" };
        std::fs::create_dir_all(src.join(class)).unwrap();
        image::RgbImage::from_raw(5, 4, img.to_vec())
            .unwrap()
            .save(src.join(class).join(format!("{i}.png")))
            .unwrap();
    }
    let out = dir.path().join("out.h5");
    let s = import_png(&src, &out, &opts(None, None)).unwrap();
    assert_eq!(s.shape, vec![4, 3, 4, 5]);
    assert_eq!(read_u8(&out), (vec![4, 3, 4, 5], chw_images(4)));
    assert_eq!(read_labels(&out), vec![0, 0, 1, 1]);
    let r = inspect(&out).unwrap();
    assert_eq!(r.labels.unwrap().classes.as_deref(), Some("cat,dog"));
    // A second size is refused, naming the file.
    image::RgbImage::new(6, 4)
        .save(src.join("dog").join("9.png"))
        .unwrap();
    let e = import_png(&src, &out, &opts(None, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("9.png is 6x4") && e.contains("one size"), "{e}");
}

#[test]
fn shapes_sets_are_seeded_and_labelled() {
    let _g = shared();
    let a = shapes::make(16, 200, 7).unwrap();
    let b = shapes::make(16, 200, 7).unwrap();
    let c = shapes::make(16, 200, 8).unwrap();
    assert_eq!(a.data, b.data);
    assert_eq!(a.labels, b.labels);
    assert_ne!(a.data, c.data);
    assert_eq!(a.data.shape, vec![200, 3, 16, 16]);
    let labels = a.labels.unwrap();
    for k in 0..shapes::CLASSES.len() as i64 {
        assert!(labels.iter().filter(|&&l| l == k).count() > 20, "class {k}");
    }
    // Every image shows two colours (shape and background), within [-1, 1].
    for img in a.data.values.chunks_exact(3 * 256) {
        let (lo, hi) = img
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(hi - lo > 0.3 && lo >= -1.0 && hi <= 1.0);
    }
    // The uint8 file holds the same images.
    let dir = tmp();
    let path = dir.path().join("s.h5");
    shapes::write(&path, 16, 200, 7, "test").unwrap();
    let (shape, bytes) = read_u8(&path);
    assert_eq!(shape, vec![200, 3, 16, 16]);
    let loaded: Vec<f32> = bytes.iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    assert_eq!(loaded, a.data.values);
    assert_eq!(read_labels(&path), labels);
}

#[test]
fn inspect_reports_unusable_labels_instead_of_refusing_the_file() {
    let _g = shared();
    let dir = tmp();
    let path = dir.path().join("float-labels.h5");
    write_h5(&path, &[4, 2], &[0.5f32; 8], None, None);
    let f = hdf5::File::open_rw(&path).unwrap();
    f.new_dataset_builder()
        .with_data(&[0.0f32, 1.0, 1.0, 2.0])
        .create("labels")
        .unwrap();
    drop(f);
    let r = inspect(&path).unwrap();
    assert!(r.labels.is_none());
    let text = r.to_string();
    assert!(
        text.contains("/labels:     unusable:") && text.contains("must be integers"),
        "{text}"
    );
    assert_eq!((r.min, r.max), (0.5, 0.5));
}

#[test]
fn inspect_reports_contents_and_draws_a_grid() {
    let _g = shared();
    let dir = tmp();
    let path = dir.path().join("x.h5");
    let mut values: Vec<f32> = (0..8 * 12).map(|i| (i % 5) as f32 / 4.0 - 0.5).collect();
    values[3] = f32::NAN;
    values[50] = f32::NEG_INFINITY;
    values[51] = f32::INFINITY;
    write_h5(
        &path,
        &[8, 3, 2, 2],
        &values,
        Some(4),
        Some(&[0, 1, 1, 2, 2, 2, 5, 5]),
    );
    let r = inspect(&path).unwrap();
    assert_eq!((r.nan, r.inf), (1, 2));
    // Rows of 12 values: the NaN is in row 0, both Infs in row 4.
    assert_eq!((r.bad_rows, r.first_bad_rows.clone()), (2, vec![0, 4]));
    assert!(
        r.to_string()
            .contains("1 NaN, 2 Inf in 2 rows (0-based: 0, 4;"),
        "{r}"
    );
    assert_eq!((r.min, r.max), (-0.5, 0.5));
    assert_eq!(r.info.chunk, Some(vec![4, 3, 2, 2]));
    let l = r.labels.as_ref().unwrap();
    assert_eq!((l.distinct, l.min, l.max), (4, 0, 5));
    assert!(r.mixture.is_none());
    let text = r.to_string();
    let with_mixture = dir.path().join("m.h5");
    write_h5(&with_mixture, &[8, 12], &values, None, None);
    let f = hdf5::File::open_rw(&with_mixture).unwrap();
    f.create_group("mixture")
        .unwrap()
        .new_dataset_builder()
        .with_data(&ndarray::Array2::<f64>::zeros((3, 12)))
        .create("means")
        .unwrap();
    drop(f);
    let m = inspect(&with_mixture).unwrap();
    assert_eq!(m.mixture, Some((3, 12)));
    assert!(m.to_string().contains("K = 3 components in D = 12"));
    for want in [
        "[8, 3, 2, 2] float32",
        "N = 8",
        "chunked [4, 3, 2, 2]",
        "1 NaN, 2 Inf",
        "/labels:     present, 4 distinct",
        "/mixture:    absent",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    // Grid: 8 images of 2x2, scaled 32x, in a 3x3 grid with 2 px gaps.
    let grid = dir.path().join("g.png");
    assert_eq!(write_grid(&path, &grid, 64).unwrap(), 8);
    let img = image::open(&grid).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (3 * 66 + 2, 3 * 66 + 2));
    // Image 1, pixel (0, 0) of each channel, at tile (0, 1).
    let want = |c: usize| ((values[12 + c * 4] + 1.0) * 127.5).round() as u8;
    assert_eq!(img.get_pixel(68 + 5, 2 + 5).0, [want(0), want(1), want(2)]);

    let feats = dir.path().join("f.h5");
    write_h5(&feats, &[8, 5], &[0f32; 40], None, None);
    let e = write_grid(&feats, &grid, 4).unwrap_err().to_string();
    assert!(e.contains("not images"), "{e}");
}

#[test]
fn cli_imports_and_inspects() {
    let _alone = SPAWN.write().unwrap_or_else(|e| e.into_inner());
    let dir = tmp();
    let d = dir.path();
    std::fs::write(d.join("a.npy"), npy("|u1", &[6, 60], &chw_images(6))).unwrap();
    let bin = env!("CARGO_BIN_EXE_fewstep");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {text}");
        text
    };
    let out = d.join("o.h5");
    let (a, o, g) = (d.join("a.npy"), out.display().to_string(), d.join("g.png"));
    run(&[
        "data",
        "import",
        "--from",
        "npy",
        a.to_str().unwrap(),
        "--shape",
        "3,4,5",
        "--compress",
        "--out",
        &o,
    ]);
    let text = run(&["data", "inspect", &o, "--grid", g.to_str().unwrap()]);
    assert!(
        text.contains("[6, 3, 4, 5] uint8") && text.contains("grid:"),
        "{text}"
    );
    assert!(
        text.contains("attr source: fewstep data import --from npy"),
        "{text}"
    );
    assert!(g.exists());
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn h5py_files_load_unchanged() {
    let _g = shared();
    // Made by tests/fixtures/make_h5py_fixture.py: gzip-compressed uint8 images, int32 labels.
    let path = fixture("h5py_images.h5");
    for cfg in [LoaderConfig::new(24, 0), streaming(24, 0)] {
        let mut l = Loader::open(&path, cfg).unwrap();
        assert_eq!(l.row_shape(), vec![3, 4, 5]);
        let b = l.next_batch().unwrap();
        let mut seen = [false; 24];
        let values = b.values.to_f32();
        for (row, &label) in values.chunks_exact(60).zip(b.labels.as_ref().unwrap()) {
            // The image index from its first pixel: 37 i mod 256 is one-to-one for i < 24.
            let i = (0..24)
                .find(|&i| row[0] == px(i, 0, 0, 0) as f32 / 127.5 - 1.0)
                .unwrap();
            let want: Vec<f32> = chw_images(24)[i * 60..(i + 1) * 60]
                .iter()
                .map(|&v| v as f32 / 127.5 - 1.0)
                .collect();
            assert_eq!(row, want.as_slice());
            assert_eq!(label, (i % 3) as i64);
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
    let r = inspect(&path).unwrap();
    assert_eq!(r.info.chunk, Some(vec![5, 3, 4, 5]));
    assert!(r
        .attrs
        .iter()
        .any(|(k, v)| k == "source" && v.contains("fixture")));

    let mut l = Loader::open(&fixture("h5py_features.h5"), LoaderConfig::new(30, 0)).unwrap();
    let b = l.next_batch().unwrap();
    let values = b.values.to_f32();
    let mut rows: Vec<&[f32]> = values.chunks_exact(3).collect();
    rows.sort_by(|a, b| a[0].total_cmp(&b[0]));
    for (i, row) in rows.iter().enumerate() {
        let want: Vec<f32> = (0..3)
            .map(|j| (i as f64 + 0.25 * j as f64 - 7.5) as f32)
            .collect();
        assert_eq!(*row, want.as_slice());
    }
}

/// float16 `/data` (issue 15): `data inspect` reports it — shape, dtype, min/max/mean/std of the
/// finite values and the NaN/Inf rows, both through HDF5's conversion (chunked, gzip) and the
/// direct reads (contiguous) — while the loader still refuses it with the dtype and the fix.
#[test]
fn inspect_reports_float16_rows_that_the_loader_refuses() {
    let _g = shared();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // (3 i + j) / 4 - 10 over [40, 3], with NaN at (3, 1) and (17, 0), +inf at (17, 2), -inf at
    // (30, 1) (tests/fixtures/make_h5py_fixture.py); every value is exact in float16.
    let r = inspect(&fixtures.join("h5py_float16_nan.h5")).unwrap();
    assert_eq!(r.info.shape, vec![40, 3]);
    assert_eq!(r.info.elem.name(), "float16");
    let bad = [(3, 1), (17, 0), (17, 2), (30, 1)];
    let finite: Vec<f64> = (0..40)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .filter(|ij| !bad.contains(ij))
        .map(|(i, j)| (3 * i + j) as f64 / 4.0 - 10.0)
        .collect();
    let mean = finite.iter().sum::<f64>() / finite.len() as f64;
    let var = finite.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / finite.len() as f64;
    assert_eq!((r.min, r.max), (-10.0, 19.75));
    assert!((r.mean - mean).abs() < 1e-12, "{} vs {mean}", r.mean);
    assert!(
        (r.std - var.sqrt()).abs() < 1e-9,
        "{} vs {}",
        r.std,
        var.sqrt()
    );
    assert_eq!((r.nan, r.inf, r.bad_rows), (2, 2, 3));
    assert_eq!(r.first_bad_rows, vec![3, 17, 30]);
    let text = r.to_string();
    assert!(text.contains("[40, 3] float16"), "{text}");
    assert!(text.contains("float16 is read here only"), "{text}");

    // Contiguous: read straight from the file's bytes. arange(20) as [10, 2].
    let plain = fixtures.join("h5py_float16.h5");
    let r = inspect(&plain).unwrap();
    assert_eq!((r.min, r.max, r.mean), (0.0, 19.0, 9.5));
    assert_eq!((r.nan, r.inf, r.bad_rows), (0, 0, 0));
    for path in [&plain, &fixtures.join("h5py_float16_nan.h5")] {
        let e = format!(
            "{:#}",
            Loader::open(path, LoaderConfig::new(2, 0)).err().unwrap()
        );
        assert!(
            e.contains("`/data` has dtype float16; supported are float32, float64 and uint8"),
            "{e}"
        );
    }
}
