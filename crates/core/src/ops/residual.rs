//! Residual connection: `out = a + b`, elementwise.

use super::Write;
use crate::Float;

/// out = a + b, elementwise, out overwritten; all the same length.
pub fn forward<T: Float>(out: &mut [T], a: &[T], b: &[T]) {
    crate::wide::run(
        #[inline(always)]
        || {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = x + y;
            }
        },
    )
}

/// da (+)= dout, db (+)= dout (as `wa`, `wb` say).
pub fn backward<T: Float>(wa: Write, da: &mut [T], wb: Write, db: &mut [T], dout: &[T]) {
    crate::wide::run(
        #[inline(always)]
        || {
            for ((x, y), &g) in da.iter_mut().zip(db.iter_mut()).zip(dout) {
                wa.put(x, g);
                wb.put(y, g);
            }
        },
    )
}
