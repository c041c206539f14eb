//! Elementwise loops compiled for the widest vector instructions the processor has, picked at run
//! time. The release build targets baseline x86-64 (SSE2), where these loops ran scalar (a fifth
//! of an mlp step): a function defined with [`vectorised!`] is compiled again with AVX-512 (or
//! AVX2 + FMA) enabled, and that copy runs where the processor has them (pulp's dispatch, the one
//! gemm uses). The results are bit-identical: the compiler widens the loops but does not reorder
//! or fuse their arithmetic (no fast-math), so a sum that must keep its order stays a fold.

/// `vectorised! { fn name<'a>(arg: Type, ...) { body } }` defines `fn name` running `body` with
/// the best instruction set enabled. The body is placed in pulp's `#[inline(always)]` entry
/// point (a closure would be a separate function, compiled without the wider instructions when
/// the inliner declines it); write its loops as zipped iterators so they vectorise, and mark what
/// it calls `#[inline(always)]`.
macro_rules! vectorised {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$lt:lifetime>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name<$lt>($($arg: $ty),*) {
            struct Op<$lt>($($ty),*);
            impl<$lt> pulp::WithSimd for Op<$lt> {
                type Output = ();
                #[inline(always)]
                fn with_simd<S: pulp::Simd>(self, _: S) {
                    let Op($($arg),*) = self;
                    $body
                }
            }
            pulp::Arch::new().dispatch(Op($($arg),*))
        }
    };
}
pub(crate) use vectorised;
