//! The levels of the wgpu ladder: one enum, one WGSL file per rung, and how each is dispatched.

use crate::WgpuError;

/// One rung of the wgpu matmul ladder, in ladder order. The names are those of the CUDA
/// ladder's rungs that do the same thing (`crates/cuda/src/ladder.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// One invocation per element of C, neighbouring invocations down a column of C
    /// (`kernels/naive.wgsl`).
    Naive,
    /// One invocation per element, neighbouring invocations along a row of C
    /// (`kernels/coalesced.wgsl`).
    Coalesced,
    /// 16×16 tiles of A and B staged in workgroup memory (`kernels/smem.wgsl`).
    SharedTiled,
    /// A 128×128 tile of C per workgroup, an 8×8 sub-tile per invocation, outer products in
    /// registers (`kernels/blocktile_2d.wgsl`).
    Blocktile2d,
    /// Rung 4 with vec4 loads from memory and from workgroup memory and vec4 multiply-adds
    /// (`kernels/vectorized.wgsl`, element type f32).
    Vectorized,
    /// The vectorised kernel with A and B stored as f16 (global and workgroup memory), each
    /// product formed and accumulated in f32 (`kernels/vectorized.wgsl`, element type f16).
    /// Needs the adapter feature `shader-f16`.
    F16,
}

/// The element type a level reads A and B in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// f32 values.
    F32,
    /// IEEE binary16, rounded to nearest even from f32.
    F16,
}

impl Input {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Input::F32 => 4,
            Input::F16 => 2,
        }
    }
}

/// How one of our kernels is found and dispatched.
pub(crate) struct KernelSpec {
    pub file: &'static str,
    /// WGSL put in front of the file: the element type of A and B for `vectorized.wgsl`.
    pub header: &'static str,
    pub src: &'static str,
    /// Rows and columns of C one workgroup computes.
    pub tile: (u32, u32),
    /// Workgroup x walks the rows of C (only the naive kernel, on purpose).
    pub x_is_row: bool,
}

impl Level {
    /// Every level, in ladder order.
    pub const ALL: [Level; 6] = [
        Level::Naive,
        Level::Coalesced,
        Level::SharedTiled,
        Level::Blocktile2d,
        Level::Vectorized,
        Level::F16,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Level::Naive => "naive",
            Level::Coalesced => "coalesced",
            Level::SharedTiled => "smem-tiled",
            Level::Blocktile2d => "blocktile-2d",
            Level::Vectorized => "vectorized",
            Level::F16 => "f16",
        }
    }

    /// Parses a name of [`Level::name`].
    pub fn from_name(s: &str) -> Result<Level, WgpuError> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Level::ALL.iter().map(|l| l.name()).collect();
                WgpuError::UnknownLevel(s.to_string(), names.join(","))
            })
    }

    /// The element type of A and B at this level.
    pub fn input(self) -> Input {
        match self {
            Level::F16 => Input::F16,
            _ => Input::F32,
        }
    }

    /// The relative error (max |C − C_ref| / max |C_ref|) this level should stay under against
    /// an f64 product of the inputs it actually reads (f16-rounded for [`Level::F16`]), for k
    /// up to a few thousand: every level accumulates in f32.
    pub fn tolerance(self) -> f64 {
        1e-4
    }

    /// The same bound against the f64 product of the unrounded f32 inputs: for f16, the
    /// rounding of the inputs (2⁻¹¹ relative each) dominates.
    pub fn tolerance_vs_f32_inputs(self) -> f64 {
        match self {
            Level::F16 => 2e-3,
            _ => self.tolerance(),
        }
    }

    pub(crate) fn kernel(self) -> KernelSpec {
        let (file, src, tile, x_is_row) = match self {
            Level::Naive => (
                "naive.wgsl",
                include_str!("../kernels/naive.wgsl"),
                (16, 16),
                true,
            ),
            Level::Coalesced => (
                "coalesced.wgsl",
                include_str!("../kernels/coalesced.wgsl"),
                (16, 16),
                false,
            ),
            Level::SharedTiled => (
                "smem.wgsl",
                include_str!("../kernels/smem.wgsl"),
                (16, 16),
                false,
            ),
            Level::Blocktile2d => (
                "blocktile_2d.wgsl",
                include_str!("../kernels/blocktile_2d.wgsl"),
                (128, 128),
                false,
            ),
            Level::Vectorized | Level::F16 => (
                "vectorized.wgsl",
                include_str!("../kernels/vectorized.wgsl"),
                (128, 128),
                false,
            ),
        };
        let header = match self {
            Level::Vectorized => "alias E = f32;\n",
            Level::F16 => "enable f16;\nalias E = f16;\n",
            _ => "",
        };
        KernelSpec {
            file,
            header,
            src,
            tile,
            x_is_row,
        }
    }
}
