//! Runtime-shaped layers: the fused CPU op of `Dense` (one host pass per layer, AVX-512 matmuls)
//! against dfdx's op-by-op version, which is also the path a CUDA build takes: values and every
//! gradient (W, b, the input and the addend) agree to float rounding.

use dfdx::prelude::*;
use fewstep::network::{Act, Dense};
use fewstep::tensor::{seeded_device, Dev};

type T2 = Tensor<(usize, usize), f32, Dev>;

/// The relative max difference of two vectors.
fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// y, and the gradients of sum(y * r) w.r.t. W, b, x and the addend, by one path.
fn run(layer: &Dense, x: &T2, extra: Option<&T2>, r: &T2, act: Act, fused: bool) -> [Vec<f32>; 5] {
    let grads = Gradients::leaky();
    let xt = x.clone().traced(grads);
    let (xt, tape) = xt.split_tape();
    let et = extra.map(|e| e.clone().put_tape(Default::default()));
    let xt = xt.put_tape(tape);
    let y = if fused {
        layer.forward_act(xt, act, et)
    } else {
        layer.forward_ops(xt, act, et)
    };
    let values = y.retaped::<NoneTape>().as_vec();
    let g = (y * r.clone()).sum().backward();
    [
        values,
        g.get(&layer.weight).as_vec(),
        g.get(&layer.bias).as_vec(),
        g.get(x).as_vec(),
        extra.map_or(vec![], |e| g.get(e).as_vec()),
    ]
}

#[test]
fn fused_dense_matches_dfdx_ops_in_values_and_gradients() {
    let dev = seeded_device(3);
    for (rows, inputs, outputs, act, with_extra) in [
        (37, 5, 11, Act::Silu, true),
        (64, 48, 64, Act::Silu, false),
        (9, 64, 3, Act::Identity, false),
        (1, 1, 1, Act::Silu, true),
    ] {
        let layer = Dense::new(&dev, inputs, outputs, true);
        let x: T2 = dev.sample_normal_like(&(rows, inputs));
        let e: T2 = dev.sample_normal_like(&(rows, outputs));
        let r: T2 = dev.sample_normal_like(&(rows, outputs));
        let extra = with_extra.then_some(&e);
        let fused = run(&layer, &x, extra, &r, act, true);
        let ops = run(&layer, &x, extra, &r, act, false);
        for (what, (a, b)) in ["y", "dW", "db", "dx", "d extra"]
            .iter()
            .zip(fused.iter().zip(&ops))
        {
            assert!(
                rel(a, b) < 1e-5,
                "{rows}x{inputs}->{outputs} {act:?}: {what} differs by {}",
                rel(a, b)
            );
        }
    }
}
