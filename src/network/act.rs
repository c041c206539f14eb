//! The activations a layer's output can go through, with the scalar maths the fused CPU op
//! ([`super::fused`]) runs: written without library calls, so its loops vectorise (libm's
//! `expf`/`tanhf` were 4% of an mlp step and 23% of a uvit step).

use super::simd::vectorised;
#[cfg(not(feature = "cuda"))]
use std::mem::MaybeUninit;

/// A layer's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Identity,
    /// x * sigmoid(x).
    Silu,
    /// dfdx's `fast_gelu`: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    Gelu,
}

const GELU_K: f32 = 0.044_715;
/// sqrt(2 / pi).
const GELU_B: f32 = 0.797_884_6;

impl Act {
    /// The activation of `p` and what its derivative needs (sigmoid(p), tanh of GELU's inner).
    #[inline(always)]
    pub fn forward(self, p: f32) -> (f32, f32) {
        match self {
            Act::Identity => (p, 0.0),
            Act::Silu => {
                let s = sigmoid(p);
                (p * s, s)
            }
            Act::Gelu => {
                let t = tanh(GELU_B * (p + GELU_K * p * p * p));
                (0.5 * p * (1.0 + t), t)
            }
        }
    }

    /// The derivative at `p`, from `aux` as [`Self::forward`] returned it.
    #[inline(always)]
    pub fn derivative(self, p: f32, aux: f32) -> f32 {
        match self {
            Act::Identity => 1.0,
            // d/dp p s(p) = s (1 + p (1 - s)).
            Act::Silu => aux * (1.0 + p * (1.0 - aux)),
            Act::Gelu => {
                let inner = GELU_B * (1.0 + 3.0 * GELU_K * p * p);
                0.5 * (1.0 + aux) + 0.5 * p * (1.0 - aux * aux) * inner
            }
        }
    }
}

// The loops over a layer's values (the fused CPU op's), one per activation (the `match` outside the loop, so each
// loop is straight-line code that vectorises).
vectorised! {
    /// y = act.forward(p).0 for each value, into `y`'s uninitialised memory.
    #[cfg(not(feature = "cuda"))]
    pub fn forward_into<'a>(act: Act, p: &'a [f32], y: &'a mut [MaybeUninit<f32>]) {
        match act {
            Act::Identity => {
                for (y, &p) in y.iter_mut().zip(p) {
                    y.write(p);
                }
            }
            Act::Silu => {
                for (y, &p) in y.iter_mut().zip(p) {
                    y.write(Act::Silu.forward(p).0);
                }
            }
            Act::Gelu => {
                for (y, &p) in y.iter_mut().zip(p) {
                    y.write(Act::Gelu.forward(p).0);
                }
            }
        }
    }
}

vectorised! {
    /// p = act.forward(p).0 for each value.
    #[cfg(not(feature = "cuda"))]
    pub fn forward_in_place<'a>(act: Act, p: &'a mut [f32]) {
        match act {
            Act::Identity => {}
            Act::Silu => p.iter_mut().for_each(|p| *p = Act::Silu.forward(*p).0),
            Act::Gelu => p.iter_mut().for_each(|p| *p = Act::Gelu.forward(*p).0),
        }
    }
}

vectorised! {
    /// g *= act.derivative(p, aux) for each value, with aux = act.forward(p).1 computed again:
    /// cheaper than keeping it (a buffer written in the forward pass, read in the backward pass)
    /// and the same bits.
    #[cfg(not(feature = "cuda"))]
    pub fn backward<'a>(act: Act, g: &'a mut [f32], p: &'a [f32]) {
        match act {
            Act::Identity => {}
            Act::Silu => {
                for (g, &p) in g.iter_mut().zip(p) {
                    *g *= Act::Silu.derivative(p, Act::Silu.forward(p).1);
                }
            }
            Act::Gelu => {
                for (g, &p) in g.iter_mut().zip(p) {
                    *g *= Act::Gelu.derivative(p, Act::Gelu.forward(p).1);
                }
            }
        }
    }
}

/// 1 / (1 + e^-x).
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh(x) = 1 - 2 / (e^2x + 1), saturating to +-1.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// e^x to within 2 ulp for |x| < 87 (Cephes' expf: x = n ln 2 + r, a degree-5 polynomial in r,
/// then 2^n from the exponent bits); saturates to e^-87 and e^88 beyond.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer in the mantissa
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let k = t.to_bits() as i32 - SHIFT.to_bits() as i32;
    e * f32::from_bits(((k + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    /// The vectorised loops give the scalar maths' numbers bit for bit.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn vectorised_loops_equal_the_scalar_maths() {
        use super::Act;
        let p: Vec<f32> = (0..1037).map(|i| (i as f32 - 500.0) * 0.031).collect();
        for act in [Act::Identity, Act::Silu, Act::Gelu] {
            let mut y = vec![std::mem::MaybeUninit::new(f32::NAN); p.len()];
            super::forward_into(act, &p, &mut y);
            // SAFETY: initialised above (and every value written by forward_into).
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            let mut in_place = p.clone();
            super::forward_in_place(act, &mut in_place);
            let mut g: Vec<f32> = p.iter().map(|v| 1.0 - v).collect();
            super::backward(act, &mut g, &p);
            for i in 0..p.len() {
                let (yi, ai) = act.forward(p[i]);
                assert_eq!(y[i].to_bits(), yi.to_bits(), "{act:?} forward at {i}");
                assert_eq!(
                    in_place[i].to_bits(),
                    yi.to_bits(),
                    "{act:?} in place at {i}"
                );
                let gi = (1.0 - p[i]) * act.derivative(p[i], ai);
                assert_eq!(g[i].to_bits(), gi.to_bits(), "{act:?} backward at {i}");
            }
        }
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0u32;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let (a, b) = (super::exp(x), x.exp());
            worst = worst.max(a.to_bits().abs_diff(b.to_bits()));
        }
        assert!(worst <= 2, "{worst} ulp");
    }
}
