//! The levels of the GPU ladder: one enum, one kernel file per rung, and how each is launched.

use crate::CudaError;

/// One rung of the GPU matmul ladder, or a cuBLAS peer. Our rungs are in ladder order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// One thread per element of C, uncoalesced (`kernels/naive.cu`).
    Naive,
    /// One thread per element, threads of a warp along a row of C (`kernels/coalesced.cu`).
    Coalesced,
    /// 32×32 tiles of A and B staged in shared memory (`kernels/smem.cu`).
    SharedTiled,
    /// 8 elements of a column of C per thread (`kernels/blocktile_1d.cu`).
    Blocktile1d,
    /// An 8×8 sub-tile of C per thread, outer products in registers (`kernels/blocktile_2d.cu`).
    Blocktile2d,
    /// Rung 5 with float4 loads and a transposed A tile (`kernels/vectorized.cu`).
    Vectorized,
    /// Block, warp and thread tiles (`kernels/warptile.cu`).
    Warptile,
    /// Rung 7 with two shared buffers and the next tile's loads in flight during the products
    /// (`kernels/warptile_db.cu`).
    WarptileDb,
    /// bf16 tensor cores through mma.sync, f32 accumulation, 128×128 block tiles
    /// (`kernels/tensor_core.cu`, `hgemm_tensor_core`).
    TensorCore,
    /// The tuned tensor-core kernel: larger tiles, fragments of the next k-slice loaded during
    /// the products, blocks swizzled for L2 (`kernels/tensor_core.cu`, `hgemm_tc_*`; the tile
    /// is [`TC_TUNED_DEFAULT`], or `FERROGPT_TC_TILE` to measure the others).
    TensorCoreTuned,
    /// Hopper's warpgroup MMA (`wgmma`, sm_90a) reading A and B from 128-byte-swizzled shared
    /// memory (`kernels/wgmma.cu`). Compute capability 9.0 only.
    TensorCoreWgmma,
    /// cuBLAS `cublasGemmEx`, f32, `CUBLAS_COMPUTE_32F` (no tensor cores).
    CublasF32,
    /// cuBLAS `cublasGemmEx`, f32 data, `CUBLAS_COMPUTE_32F_FAST_TF32` (TF32 tensor cores).
    CublasTf32,
    /// cuBLAS `cublasGemmEx`, bf16 A and B, f32 C and accumulation.
    CublasBf16,
}

/// The element type a level reads A and B in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// f32 values.
    F32,
    /// bf16 bits (`u16`), rounded to nearest even from f32.
    Bf16,
}

/// How one of our kernels is found and launched.
pub(crate) struct KernelSpec {
    pub file: &'static str,
    pub src: &'static str,
    pub name: &'static str,
    /// Block tile (rows of C, columns of C) and the k-step the fast variant needs whole.
    pub tile: (usize, usize, usize),
    pub threads: (u32, u32),
    /// Dynamic shared memory in bytes (0: static only).
    pub dyn_smem: u32,
    /// Whether the kernel has an `_edge` variant (else it checks bounds always).
    pub has_edge: bool,
    /// Grid x walks the rows of C (only the naive kernel, on purpose).
    pub x_is_row: bool,
}

impl Level {
    /// Every level: our rungs in order, then the cuBLAS peers.
    pub const ALL: [Level; 14] = [
        Level::Naive,
        Level::Coalesced,
        Level::SharedTiled,
        Level::Blocktile1d,
        Level::Blocktile2d,
        Level::Vectorized,
        Level::Warptile,
        Level::WarptileDb,
        Level::TensorCore,
        Level::TensorCoreTuned,
        Level::TensorCoreWgmma,
        Level::CublasF32,
        Level::CublasTf32,
        Level::CublasBf16,
    ];

    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Level::Naive => "naive",
            Level::Coalesced => "coalesced",
            Level::SharedTiled => "smem-tiled",
            Level::Blocktile1d => "blocktile-1d",
            Level::Blocktile2d => "blocktile-2d",
            Level::Vectorized => "vectorized",
            Level::Warptile => "warptile",
            Level::WarptileDb => "warptile-db",
            Level::TensorCore => "tensor-core-bf16",
            Level::TensorCoreTuned => "tensor-core-tuned",
            Level::TensorCoreWgmma => "tensor-core-wgmma",
            Level::CublasF32 => "cublas-f32",
            Level::CublasTf32 => "cublas-tf32",
            Level::CublasBf16 => "cublas-bf16",
        }
    }

    /// Parses a name of [`Level::name`].
    pub fn from_name(s: &str) -> Result<Level, CudaError> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Level::ALL.iter().map(|l| l.name()).collect();
                CudaError::UnknownLevel(s.to_string(), names.join(","))
            })
    }

    /// The element type of A and B at this level.
    pub fn input(self) -> Input {
        match self {
            Level::TensorCore
            | Level::TensorCoreTuned
            | Level::TensorCoreWgmma
            | Level::CublasBf16 => Input::Bf16,
            _ => Input::F32,
        }
    }

    /// Whether this level is cuBLAS (a peer) rather than our own kernel.
    pub fn is_cublas(self) -> bool {
        matches!(
            self,
            Level::CublasF32 | Level::CublasTf32 | Level::CublasBf16
        )
    }

    /// The relative error (max |C − C_ref| / max |C_ref|) this level should stay under against
    /// an f64 product of the inputs it actually reads (bf16-rounded for bf16 levels), for k up
    /// to a few thousand: f32 accumulation for all but TF32, whose inputs lose 13 bits.
    pub fn tolerance(self) -> f64 {
        match self {
            Level::CublasTf32 => 5e-3,
            _ => 1e-4,
        }
    }

    /// The compute capability a level needs exactly, if any (wgmma exists on sm_90a only).
    pub fn needs_cc(self) -> Option<(i32, i32)> {
        match self {
            Level::TensorCoreWgmma => Some((9, 0)),
            _ => None,
        }
    }

    pub(crate) fn kernel(self) -> Option<KernelSpec> {
        macro_rules! k {
            ($file:literal, $name:literal, $tile:expr, $threads:expr, $smem:expr, $edge:expr, $xrow:expr) => {
                Some(KernelSpec {
                    file: $file,
                    src: include_str!(concat!("../kernels/", $file)),
                    name: $name,
                    tile: $tile,
                    threads: $threads,
                    dyn_smem: $smem,
                    has_edge: $edge,
                    x_is_row: $xrow,
                })
            };
        }
        match self {
            Level::Naive => k!(
                "naive.cu",
                "sgemm_naive",
                (32, 32, 1),
                (32, 32),
                0,
                false,
                true
            ),
            Level::Coalesced => {
                k!(
                    "coalesced.cu",
                    "sgemm_coalesced",
                    (32, 32, 1),
                    (32, 32),
                    0,
                    false,
                    false
                )
            }
            Level::SharedTiled => k!(
                "smem.cu",
                "sgemm_smem",
                (32, 32, 1),
                (32, 32),
                0,
                false,
                false
            ),
            Level::Blocktile1d => {
                k!(
                    "blocktile_1d.cu",
                    "sgemm_blocktile_1d",
                    (64, 64, 8),
                    (512, 1),
                    0,
                    true,
                    false
                )
            }
            Level::Blocktile2d => {
                k!(
                    "blocktile_2d.cu",
                    "sgemm_blocktile_2d",
                    (128, 128, 8),
                    (256, 1),
                    0,
                    true,
                    false
                )
            }
            Level::Vectorized => {
                k!(
                    "vectorized.cu",
                    "sgemm_vectorized",
                    (128, 128, 8),
                    (256, 1),
                    0,
                    true,
                    false
                )
            }
            Level::Warptile => {
                k!(
                    "warptile.cu",
                    "sgemm_warptile",
                    (128, 128, 16),
                    (128, 1),
                    0,
                    true,
                    false
                )
            }
            Level::WarptileDb => {
                k!(
                    "warptile_db.cu",
                    "sgemm_warptile_db",
                    (128, 128, 16),
                    (128, 1),
                    0,
                    true,
                    false
                )
            }
            // 4 stages × (128×40 + 32×136) bf16 = 75,776 bytes (see tensor_core.cu).
            Level::TensorCore => k!(
                "tensor_core.cu",
                "hgemm_tensor_core",
                (128, 128, 32),
                (256, 1),
                75_776,
                true,
                false
            ),
            Level::TensorCoreTuned => {
                let (name, tile, smem) = tc_tuned_variant();
                Some(KernelSpec {
                    file: "tensor_core.cu",
                    src: include_str!("../kernels/tensor_core.cu"),
                    name,
                    tile,
                    threads: (256, 1),
                    dyn_smem: smem,
                    has_edge: true,
                    x_is_row: false,
                })
            }
            // 4 stages × (16 KB + 32 KB) + 1 KB to align the tiles to 1024 bytes.
            Level::TensorCoreWgmma => {
                k!(
                    "wgmma.cu",
                    "hgemm_wgmma",
                    (128, 256, 64),
                    (256, 1),
                    197_632,
                    true,
                    false
                )
            }
            _ => None,
        }
    }
}

/// One tile shape of the tuned tensor-core rung.
pub struct TcTile {
    /// The value of `FERROGPT_TC_TILE` that picks it.
    pub name: &'static str,
    /// The kernel's name in `kernels/tensor_core.cu`.
    pub kernel: &'static str,
    /// (BM, BN, BK): rows and columns of C per block, and the k-slice staged per step.
    pub tile: (usize, usize, usize),
    /// Dynamic shared memory, bytes.
    pub smem: u32,
}

/// The tile shapes of the tuned tensor-core rung (see `kernels/tensor_core.cu`).
pub const TC_TUNED_VARIANTS: [TcTile; 4] = [
    TcTile {
        name: "128x256x32",
        kernel: "hgemm_tc_128x256x32",
        tile: (128, 256, 32),
        smem: 108_544,
    },
    TcTile {
        name: "128x256x64",
        kernel: "hgemm_tc_128x256x64",
        tile: (128, 256, 64),
        smem: 156_672,
    },
    TcTile {
        name: "128x128x64",
        kernel: "hgemm_tc_128x128x64",
        tile: (128, 128, 64),
        smem: 107_520,
    },
    TcTile {
        name: "256x128x32",
        kernel: "hgemm_tc_256x128x32",
        tile: (256, 128, 32),
        smem: 116_736,
    },
];

/// The tile of [`Level::TensorCoreTuned`] unless `FERROGPT_TC_TILE` names another.
pub const TC_TUNED_DEFAULT: &str = "128x256x64";

fn tc_tuned_variant() -> (&'static str, (usize, usize, usize), u32) {
    let want = std::env::var("FERROGPT_TC_TILE").unwrap_or_default();
    let pick = |n: &str| TC_TUNED_VARIANTS.iter().find(|v| v.name == n);
    let v = pick(&want)
        .or_else(|| pick(TC_TUNED_DEFAULT))
        .expect("the default is in the table");
    (v.kernel, v.tile, v.smem)
}
