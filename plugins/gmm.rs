//! The exact denoiser of an isotropic Gaussian mixture sum_k w_k N(mu_k, s_k^2 I): E[x | z_t] and
//! tr(Var[x | z_t]) / d in closed form, the reference the samplers and objectives are checked
//! against. Under z = alpha x + sigma eps, component k gives z ~ N(alpha mu_k, v_k I) with
//! v_k = alpha^2 s_k^2 + sigma^2, and a Gaussian posterior with mean c_k mu_k + g_k z
//! (c_k = sigma^2 / v_k, g_k = alpha s_k^2 / v_k) and variance s_k^2 c_k per dimension.

use anyhow::{bail, Context, Result};
use dfdx::prelude::*;
use fewstep::data::Mixture;
use fewstep::denoiser::{BuildCtx, Denoiser, DenoiserSpec, Level};
use fewstep::register_plugin;
use fewstep::tensor::{Batch, Coef, Dev, Rows};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Reads the mixture from the dataset's `/mixture` (what `fewstep data make ring8 ...` writes).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Gmm {
    /// The mixture given inline instead of read from the dataset (it then takes precedence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<InlineMixture>,
}

/// sum_k w_k N(mu_k, s_k^2 I), written out in the config.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct InlineMixture {
    /// Component weights w_k (normalised to sum to one).
    pub weights: Vec<f64>,
    /// Component means mu_k, one list of D numbers each.
    pub means: Vec<Vec<f64>>,
    /// Component standard deviations s_k.
    pub stds: Vec<f64>,
}

const HOW_TO_MAKE: &str = "make a mixture dataset with e.g. `fewstep data make ring8 --n 20000 \
                           --seed 0 --out ring8.h5` (also two-modes, gmm64) and pass it as --data";

#[typetag::serde(name = "gmm")]
impl DenoiserSpec for Gmm {
    fn build(&self, ctx: &BuildCtx) -> Result<Box<dyn Denoiser>> {
        let mixture = match (&self.mixture, &ctx.data) {
            (Some(m), _) => {
                let dim = m.means.first().map_or(0, Vec::len);
                if m.means.iter().any(|mu| mu.len() != dim) {
                    bail!("gmm: inline `mixture.means` rows have different lengths");
                }
                Mixture::new(m.weights.clone(), m.means.concat(), m.stds.clone(), dim)
                    .context("gmm: bad inline `mixture`")?
            }
            (None, Some(path)) => Mixture::read(path)?.with_context(|| {
                format!(
                    "the `gmm` denoiser needs a Gaussian-mixture dataset, but {} has no \
                     `/mixture` group; {HOW_TO_MAKE}",
                    path.display()
                )
            })?,
            (None, None) => bail!(
                "the `gmm` denoiser needs a Gaussian-mixture dataset and none was given; \
                 {HOW_TO_MAKE}, or give `mixture = {{ weights, means, stds }}` in [denoiser]"
            ),
        };
        Ok(Box::new(GmmDenoiser::new(&ctx.dev, &mixture)))
    }
}

type Vec64 = Tensor<(usize,), f64, Dev>;
type Mat64 = Tensor<(usize, usize), f64, Dev>;

/// The mixture's constants on the device. Everything is computed in f64: the expanded distance
/// ||z||^2 - 2 alpha z.mu + alpha^2 ||mu||^2 and the variance's E_k||c_k mu_k||^2 - ||M||^2 are
/// differences of larger numbers, and near t = 0 the variance (~ sigma^2) is far below f32's
/// resolution of values ~1.
pub struct GmmDenoiser {
    dev: Dev,
    dim: usize,
    /// mu `[K, D]` and its transpose.
    means: Mat64,
    means_t: Mat64,
    /// ||mu_k||^2, s_k^2, ln w_k: `[K]`.
    mean_sq: Vec64,
    var: Vec64,
    log_w: Vec64,
}

impl GmmDenoiser {
    /// Components of weight zero are dropped (their ln w would be -inf).
    pub fn new(dev: &Dev, m: &Mixture) -> Self {
        let keep: Vec<usize> = (0..m.components())
            .filter(|&k| m.weights[k] > 0.0)
            .collect();
        let (k, d) = (keep.len(), m.dim);
        let mu: Vec<f64> = keep.iter().flat_map(|&j| m.mean(j).to_vec()).collect();
        let mu_t: Vec<f64> = (0..d)
            .flat_map(|i| keep.iter().map(move |&j| m.mean(j)[i]))
            .collect();
        let col = |f: &dyn Fn(usize) -> f64| -> Vec64 {
            dev.tensor_from_vec(keep.iter().map(|&j| f(j)).collect(), (k,))
        };
        GmmDenoiser {
            dev: dev.clone(),
            dim: d,
            means: dev.tensor_from_vec(mu, (k, d)),
            means_t: dev.tensor_from_vec(mu_t, (d, k)),
            mean_sq: col(&|j| m.mean(j).iter().map(|x| x * x).sum()),
            var: col(&|j| m.stds[j] * m.stds[j]),
            log_w: col(&|j| m.weights[j].ln()),
        }
    }

    /// E[x | z] `[B, D]` and, if asked, tr(Var[x | z]) / d `[B]`.
    fn posterior(
        &self,
        z: &Batch,
        level: &Level,
        with_var: bool,
    ) -> Result<(Mat64, Option<Vec64>)> {
        let (b, d) = *z.shape();
        if d != self.dim {
            bail!(
                "gmm: input rows have {d} values but the mixture is {}-dimensional",
                self.dim
            );
        }
        let bk = (b, self.log_w.shape().0);
        let per_k = |v: &Vec64| v.clone().broadcast_like::<_, Axis<0>>(&bk);
        let alpha = self
            .rows(&level.alpha, b)?
            .broadcast_like::<_, Axis<1>>(&bk);
        let sigma2 = self
            .rows(&level.sigma, b)?
            .square()
            .broadcast_like::<_, Axis<1>>(&bk);
        let s2 = per_k(&self.var);
        let z = z.clone().to_dtype::<f64>();

        let v = alpha.clone().square() * s2.clone() + sigma2.clone();
        let z_mu = z.clone().matmul(self.means_t.clone());
        let z_sq = z.clone().square().sum::<(usize,), Axis<1>>();
        let z_sq = z_sq.broadcast_like::<_, Axis<1>>(&bk);
        // ||z - alpha mu_k||^2 expanded so z.mu is one matmul; rounding can dip below zero.
        let dist2 = (z_sq.clone() - alpha.clone() * z_mu.clone() * 2.0
            + alpha.clone().square() * per_k(&self.mean_sq))
        .relu();
        let logits =
            per_k(&self.log_w) - v.clone().ln() * (d as f64 / 2.0) - dist2 / (v.clone() * 2.0);
        let r = logits.softmax::<Axis<1>>();

        let c = sigma2 / v.clone();
        let g = alpha * s2.clone() / v;
        let g_bar = (r.clone() * g.clone()).sum::<(usize,), Axis<1>>();
        let m_mu = (r.clone() * c.clone()).matmul(self.means.clone());
        let mean = m_mu.clone() + g_bar.clone().broadcast_like::<_, Axis<1>>(&(b, d)) * z;
        if !with_var {
            return Ok((mean, None));
        }
        // Law of total variance: E_k[s_k^2 c_k] + E_k||m_k - E[x|z]||^2 / d, where
        // m_k - E[x|z] = (c_k mu_k - M) + (g_k - g_bar) z with M = E_k[c_k mu_k]. Expanded into
        // [B, K] terms; z only enters through (g_k - g_bar), so a large ||z||^2 cancels nothing.
        let within = (r.clone() * s2 * c.clone()).sum::<(usize,), Axis<1>>();
        let dg = g - g_bar.broadcast_like::<_, Axis<1>>(&bk);
        let per_k_spread = c.clone().square() * per_k(&self.mean_sq)
            + dg.clone() * c * z_mu * 2.0
            + dg.square() * z_sq;
        let spread = (r * per_k_spread).sum::<(usize,), Axis<1>>()
            - m_mu.square().sum::<(usize,), Axis<1>>();
        let var = (within + spread / d as f64).relu();
        Ok((mean, Some(var)))
    }

    /// A level coefficient as f64 rows (scalars stay exact in f64).
    fn rows(&self, c: &Coef, b: usize) -> Result<Vec64> {
        match c {
            Coef::Scalar(x) => Ok(self.dev.ones_like(&(b,)) * *x),
            Coef::Rows(r) if r.host().len() == b => Ok(r.tensor().clone().to_dtype::<f64>()),
            Coef::Rows(r) => bail!(
                "gmm: level has {} rows but the batch has {b}",
                r.host().len()
            ),
        }
    }
}

impl Denoiser for GmmDenoiser {
    fn dim(&self) -> usize {
        self.dim
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        Ok(self.posterior(z, level, false)?.0.to_dtype::<f32>())
    }

    fn posterior_variance(&self, z: &Batch, level: &Level) -> Option<Result<Rows>> {
        Some(
            self.posterior(z, level, true)
                .map(|(_, var)| var.expect("asked for").to_dtype::<f32>()),
        )
    }
}

register_plugin!(
    DENOISER,
    "gmm",
    Gmm,
    "exact E[x|z_t] and posterior variance of the dataset's Gaussian mixture (`/mixture`)"
);
