//! CPU kernels of the model runtime, apart from the model files (as candle keeps its
//! kernels out of `candle-transformers`' models): each is a candle custom op or a plain
//! slice function, with a portable path and, where it pays, an AVX2/AVX-512 path chosen
//! at run time. Every SIMD path is tested against its portable twin.
//!
//! | kernel | job |
//! |---|---|
//! | [`qmatvec`] | products of GGUF-quantized weights (Q4_1/Q8_0) with activations |
//! | [`cross_entropy`] | the output projection and cross-entropy of the loss rows in one op, a block of rows at a time, gradients in the forward pass (training) |
//! | [`lora_linear`] | a frozen linear layer and its LoRA adapter in one op, with its backward pass (training) |
//! | [`matmul`] | f32 products with size-aware threading (`gemm`), one block of the output per thread |
//! | [`norm`] | RMS norm, forward and backward |
//! | [`rope`] | rotary position embedding, interleaved or halves |
//! | [`swiglu`] | the SiLU gate of the MLP |
//! | [`softmax`] | causal softmax for training (and prompts off the CPU) |
//! | [`decoder_layer`] | a whole decoder layer as one op, its backward pass by hand, LoRA adapters included (training) |
//! | [`packed_attention`] | attention over sequences packed end to end (training) |
//! | [`tile`] | the attention's small products in 6 x 16 register tiles, skipping the causal zeros |
//! | [`decode_attention`] | inference attention against the KV cache, row by row: decoding steps and prompts alike, so a kept cache changes nothing |
//! | [`adamw`] | AdamW's update of one parameter in place, the clipping scale folded in (training) |
//! | [`exp`] | vectorized `exp` shared by the softmax, the SiLU gate and the sampler |
//! | [`rows`] | row-block helpers the kernels share, and the one thread pool they all run on |

pub(crate) mod adamw;
pub(crate) mod cross_entropy;
pub(crate) mod decode_attention;
pub(crate) mod decoder_layer;
pub(crate) mod exp;
pub(crate) mod lora_linear;
pub(crate) mod matmul;
pub(crate) mod norm;
pub(crate) mod packed_attention;
pub(crate) mod qmatvec;
pub(crate) mod rope;
pub(crate) mod rows;
pub(crate) mod softmax;
pub(crate) mod swiglu;
pub(crate) mod tile;
