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

/// How a dense layer is run: its fused op, its fused op as a network input, or dfdx's ops.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Fused,
    FusedInput,
    Ops,
}

/// y, and the gradients of sum(y * r) w.r.t. W, b, x and the addend, by one path.
fn run(layer: &Dense, x: &T2, extra: Option<&T2>, r: &T2, act: Act, path: Path) -> [Vec<f32>; 5] {
    let grads = Gradients::leaky();
    let xt = x.clone().traced(grads);
    let (xt, tape) = xt.split_tape();
    let et = extra.map(|e| e.clone().put_tape(Default::default()));
    let xt = xt.put_tape(tape);
    let y = match path {
        Path::Fused => layer.forward_act(xt, act, et),
        Path::FusedInput => layer.forward_input(xt, act, et),
        Path::Ops => layer.forward_ops(xt, act, et),
    };
    let values = y.retaped::<NoneTape>().as_vec();
    let g = (y * r.clone()).sum().backward();
    [
        values,
        g.get(&layer.weight).as_vec(),
        g.get(&layer.bias).as_vec(),
        // forward_input leaves x without a gradient buffer (dfdx's `get` would panic).
        if path == Path::FusedInput {
            vec![]
        } else {
            g.get(x).as_vec()
        },
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
        (20, 16, 40, Act::Gelu, true),
        (7, 3, 5, Act::Gelu, false),
    ] {
        let layer = Dense::new(&dev, inputs, outputs, true);
        let x: T2 = dev.sample_normal_like(&(rows, inputs));
        let e: T2 = dev.sample_normal_like(&(rows, outputs));
        let r: T2 = dev.sample_normal_like(&(rows, outputs));
        let extra = with_extra.then_some(&e);
        let fused = run(&layer, &x, extra, &r, act, Path::Fused);
        let ops = run(&layer, &x, extra, &r, act, Path::Ops);
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
        // As a network input: the same values and parameter gradients bit for bit, and no
        // gradient computed for x.
        let input = run(&layer, &x, extra, &r, act, Path::FusedInput);
        for k in [0, 1, 2, 4] {
            assert_eq!(input[k], fused[k], "{rows}x{inputs}->{outputs}: part {k}");
        }
    }
}

#[test]
fn attention_and_layer_norm_match_dfdx_modules() {
    use dfdx::nn::{builders, DeviceBuildExt, Module};
    use fewstep::network::{Attention, LayerNorm, Param};
    let dev = seeded_device(5);
    let mha = dev.build_module::<builders::MultiHeadAttention<8, 2>, f32>();
    let mut att = Attention::new(&dev, 8, 2, false);
    for (ours, theirs) in [
        (&mut att.w_q, &mha.w_q),
        (&mut att.w_k, &mha.w_k),
        (&mut att.w_v, &mha.w_v),
        (&mut att.w_o, &mha.w_o),
    ] {
        ours.weight.write(&theirs.weight.as_vec());
        ours.bias.write(&theirs.bias.as_vec());
    }
    let (b, n) = (3, 5);
    let x: Tensor<(usize, usize, Const<8>), f32, Dev> = dev.sample_normal_like(&(b, n, Const));
    let want = mha.forward(x.clone()).as_vec();
    let rows: T2 = dev.tensor_from_vec(x.as_vec(), (b * n, 8));
    let got = att.forward(rows.clone(), n, None).as_vec();
    assert!(
        rel(&got, &want) < 1e-5,
        "attention differs by {}",
        rel(&got, &want)
    );

    let ln = dev.build_module::<builders::LayerNorm1D<8>, f32>();
    let ours = LayerNorm::new(&dev, 8);
    let want = ln.forward(x).as_vec();
    assert!(rel(&ours.forward(rows).as_vec(), &want) < 1e-6);
}

#[test]
fn fused_layer_norm_matches_dfdx_ops_in_values_and_gradients() {
    use fewstep::network::{LayerNorm, Param};
    let dev = seeded_device(9);
    for (rows, width) in [(13, 8), (64, 256), (1, 3)] {
        let mut ln = LayerNorm::new(&dev, width);
        // Not the identity init: random gamma and beta.
        let g: Tensor<(usize,), f32, Dev> = dev.sample_normal_like(&(width,));
        let b: Tensor<(usize,), f32, Dev> = dev.sample_normal_like(&(width,));
        ln.gamma.write(&g.as_vec());
        ln.beta.write(&b.as_vec());
        let x: T2 = dev.sample_normal_like(&(rows, width));
        let r: T2 = dev.sample_normal_like(&(rows, width));
        let run = |fused: bool| {
            let xt = x.clone().traced(Gradients::leaky());
            let y = if fused {
                ln.forward(xt)
            } else {
                ln.forward_ops(xt)
            };
            let values = y.retaped::<NoneTape>().as_vec();
            let grads = (y * r.clone()).sum().backward();
            [
                values,
                grads.get(&ln.gamma).as_vec(),
                grads.get(&ln.beta).as_vec(),
                grads.get(&x).as_vec(),
            ]
        };
        let (fused, ops) = (run(true), run(false));
        for (what, (a, b)) in ["y", "d gamma", "d beta", "dx"]
            .iter()
            .zip(fused.iter().zip(&ops))
        {
            assert!(
                rel(a, b) < 1e-4,
                "{rows}x{width}: {what} differs by {}",
                rel(a, b)
            );
        }
    }
}

#[test]
fn fused_attention_matches_dfdx_ops_in_values_and_gradients() {
    use fewstep::network::Attention;
    let dev = seeded_device(11);
    for (b, n, width, heads) in [(3, 5, 8, 2), (2, 16, 32, 4), (1, 1, 4, 1)] {
        let att = Attention::new(&dev, width, heads, true);
        let x: T2 = dev.sample_normal_like(&(b * n, width));
        let r: T2 = dev.sample_normal_like(&(b * n, width));
        // With the residual x added by the output projection, as the uvit's blocks use it: dx
        // then holds both paths' gradients.
        let run = |fused: bool| {
            let xt = x.clone().traced(Gradients::leaky());
            let (xs, tape) = xt.split_tape();
            let residual = Some(xs.clone().retaped::<OwnedTape<f32, _>>());
            let xt = xs.put_tape(tape);
            let y = if fused {
                att.forward(xt, n, residual)
            } else {
                att.forward_ops(xt, n, residual)
            };
            let values = y.retaped::<NoneTape>().as_vec();
            let g = (y * r.clone()).sum().backward();
            [
                values,
                g.get(&att.w_q.weight).as_vec(),
                g.get(&att.w_k.weight).as_vec(),
                g.get(&att.w_v.weight).as_vec(),
                g.get(&att.w_o.weight).as_vec(),
                g.get(&x).as_vec(),
            ]
        };
        let (fused, ops) = (run(true), run(false));
        for (what, (a, c)) in ["y", "dWq", "dWk", "dWv", "dWo", "dx"]
            .iter()
            .zip(fused.iter().zip(&ops))
        {
            assert!(
                rel(a, c) < 1e-4,
                "{b}x{n}x{width}/{heads}: {what} differs by {}",
                rel(a, c)
            );
        }
    }
}
