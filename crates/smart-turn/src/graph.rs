//! Smart Turn's parameters out of its ONNX export, found by walking the graph from its input.
//!
//! The CPU file (`smart-turn-v3.2-cpu.onnx`) was quantized statically in QDQ form: every weight is
//! an int8 initializer behind a `DequantizeLinear` (per output channel, zero point 0), and most
//! activations pass through a `QuantizeLinear` -> `DequantizeLinear` pair with a fixed uint8 scale
//! and zero point. The model was calibrated with those roundings in place and its probability
//! moves by up to ~0.5 near the decision boundary when they are left out (measured with
//! onnxruntime on a copy of the graph without them), so they are part of the model: each one is
//! kept here as an [`Fq`] at the place the graph puts it.
//!
//! Weights of the matrix products carry no names in the export (`val_25_quantized`), so nothing is
//! looked up by name except the float parameters that kept theirs (biases and norms, used to tell
//! q from v); the walk follows values from the graph input through each block and fails with the
//! step it could not take when the file is not this architecture.

use anyhow::{anyhow, bail, ensure, Context, Result};
use voice_onnx::{attr_float, attr_int, attr_ints, dequantize, dtype, input, output, Graph, HostTensor};

/// Fake quantization of an activation: `(clamp(round(x / scale) + zero, 0, 255) - zero) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fq {
    pub scale: f32,
    pub zero: f32,
}

/// `x W^T` with W (out, in), its bias, and the quantization of its output. The export puts the
/// bias after the output's quantization for `MatMul` + `Add` and before it for `Gemm`.
#[derive(Debug, Clone)]
pub(crate) struct LinearW {
    pub w: HostTensor,
    pub b: Option<HostTensor>,
    pub out: Fq,
    pub bias_before_quant: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct ConvW {
    /// (out, in, kernel)
    pub w: HostTensor,
    pub b: HostTensor,
    pub stride: usize,
    pub padding: usize,
    pub out: Fq,
}

#[derive(Debug, Clone)]
pub(crate) struct NormW {
    pub w: HostTensor,
    pub b: HostTensor,
    pub eps: f32,
}

#[derive(Debug, Clone)]
pub(crate) struct AttentionW {
    pub q: LinearW,
    pub k: LinearW,
    pub v: LinearW,
    pub quant: AttentionQuant,
    pub out: LinearW,
}

/// The attention's scalars between its projections: head split, scales and quantizations.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionQuant {
    pub heads: usize,
    /// Queries and keys are each multiplied by head_dim^-1/4 (PyTorch's SDPA split of the scale).
    pub q_mul: f32,
    pub k_mul: f32,
    pub q_scaled: Fq,
    pub k_scaled: Fq,
    pub v_heads: Fq,
    pub scores: Fq,
    pub probs: Fq,
    pub context: Fq,
    pub merged: Fq,
}

#[derive(Debug, Clone)]
pub(crate) struct LayerW {
    pub attn_norm: NormW,
    pub attn_norm_q: Fq,
    pub attn: AttentionW,
    pub ffn_norm: NormW,
    pub ffn_norm_q: Fq,
    pub fc1: LinearW,
    pub gelu_q: Fq,
    pub fc2: LinearW,
}

/// Everything the forward pass needs, in the order it runs.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    pub input_q: Fq,
    pub conv1: ConvW,
    pub gelu1_q: Fq,
    pub conv2: ConvW,
    /// (positions, d_model)
    pub positions: HostTensor,
    pub layers: Vec<LayerW>,
    pub final_norm: NormW,
    pub final_q: Fq,
    /// Attention pooling over time: tanh(x W1 + b1) W2 + b2, softmax over frames.
    pub pool_hidden: LinearW,
    pub pool_tanh_q: Fq,
    pub pool_score: LinearW,
    pub pooled_q: Fq,
    /// Classifier: Linear -> LayerNorm -> GELU -> Linear -> GELU -> Linear -> sigmoid.
    pub cls_in: LinearW,
    pub cls_norm: NormW,
    pub cls_gelu_q: Fq,
    pub cls_mid: LinearW,
    pub cls_mid_gelu_q: Fq,
    pub cls_out: LinearW,
}

impl Weights {
    pub fn d_model(&self) -> usize {
        self.positions.shape[1]
    }
}

struct Walk<'a, 'g> {
    g: &'g Graph<'a>,
}

impl<'a> Walk<'a, '_> {
    /// The only consumer of `v` with operator `op`.
    fn next(&self, v: &str, op: &str) -> Result<&'a voice_onnx::proto::NodeProto> {
        self.g.consumer(v, op)
    }

    /// `v` -> QuantizeLinear -> DequantizeLinear: the pair's parameters and the DQ output.
    fn fq(&self, v: &str) -> Result<(Fq, &'a str)> {
        let q = self.next(v, "QuantizeLinear")?;
        let dq = self.next(output(q, 0)?, "DequantizeLinear")?;
        let zero = self.g.tensor(input(q, 2)?)?;
        ensure!(zero.dtype == dtype::UINT8, "activation `{v}` is quantized to ONNX type {}, expected uint8", zero.dtype);
        let fq = Fq { scale: self.g.tensor(input(q, 1)?)?.scalar()?, zero: zero.scalar()? };
        let back = Fq { scale: self.g.tensor(input(dq, 1)?)?.scalar()?, zero: self.g.tensor(input(dq, 2)?)?.scalar()? };
        ensure!(fq == back && fq.scale > 0.0 && fq.scale.is_finite(), "activation `{v}`: quantize {fq:?} and dequantize {back:?} disagree");
        Ok((fq, output(dq, 0)?))
    }

    /// A weight behind a `DequantizeLinear` of an int8 initializer.
    fn weight(&self, v: &str) -> Result<HostTensor> {
        let dq = self
            .g
            .producer(v)
            .filter(|n| n.op_type == "DequantizeLinear")
            .ok_or_else(|| anyhow!("weight `{v}` is not dequantized from an initializer"))?;
        let q = self.g.tensor(input(dq, 0)?)?;
        let axis = usize::try_from(attr_int(dq, "axis", 1)).map_err(|_| anyhow!("weight `{v}`: negative quantization axis"))?;
        dequantize(&q, &self.g.tensor(input(dq, 1)?)?, &self.g.tensor(input(dq, 2)?)?, axis).with_context(|| format!("weight `{v}`"))
    }

    /// A bias: a float initializer, or an int32 one behind a `DequantizeLinear`.
    fn bias(&self, v: &str) -> Result<HostTensor> {
        if self.g.has_tensor(v) {
            return HostTensor::from_floats(&self.g.tensor(v)?);
        }
        let dq =
            self.g.producer(v).filter(|n| n.op_type == "DequantizeLinear").ok_or_else(|| anyhow!("bias `{v}` is neither stored nor dequantized"))?;
        dequantize(&self.g.tensor(input(dq, 0)?)?, &self.g.tensor(input(dq, 1)?)?, &self.g.tensor(input(dq, 2)?)?, 0)
    }

    /// Follow reshapes and transposes (shape bookkeeping the model code does itself).
    fn skip_layout(&self, mut v: &'a str) -> Result<&'a str> {
        loop {
            let next: Vec<_> = self.g.consumers(v).iter().filter(|n| n.op_type != "Shape").collect();
            match next.as_slice() {
                [n] if n.op_type == "Reshape" || n.op_type == "Transpose" => v = output(n, 0)?,
                _ => return Ok(v),
            }
        }
    }

    /// `MatMul` by a weight, its output quantized, then an optional bias `Add`. Returns the layer,
    /// the name of the bias (if any) and the value after it.
    fn matmul(&self, mm: &'a voice_onnx::proto::NodeProto) -> Result<(LinearW, Option<&'a str>, &'a str)> {
        ensure!(mm.op_type == "MatMul", "expected a MatMul, found {} `{}`", mm.op_type, mm.name);
        let w = self.weight(input(mm, 1)?)?.t()?;
        let (out, y) = self.fq(output(mm, 0)?)?;
        let add = self.g.consumers(y).iter().find(|n| n.op_type == "Add" && n.input.iter().any(|i| self.g.has_tensor(i)));
        let (b, name, y) = match add {
            Some(add) => {
                let name = add.input.iter().find(|i| self.g.has_tensor(i)).expect("checked above");
                (Some(self.bias(name)?), Some(name.as_str()), output(add, 0)?)
            }
            None => (None, None, y),
        };
        if let Some(b) = &b {
            ensure!(b.data.len() == w.shape[0], "bias of {} values for {} outputs", b.data.len(), w.shape[0]);
        }
        Ok((LinearW { w, b, out, bias_before_quant: false }, name, y))
    }

    /// `Gemm` (x W^T + b), output quantized.
    fn gemm(&self, v: &str) -> Result<(LinearW, &'a str)> {
        let n = self.next(v, "Gemm")?;
        ensure!(
            attr_int(n, "transA", 0) == 0 && attr_int(n, "transB", 0) == 1 && attr_float(n, "alpha", 1.0) == 1.0 && attr_float(n, "beta", 1.0) == 1.0,
            "Gemm `{}` is not x W^T + b",
            n.name
        );
        let w = self.weight(input(n, 1)?)?;
        let b = self.bias(input(n, 2)?)?;
        ensure!(w.shape.len() == 2 && b.data.len() == w.shape[0], "Gemm `{}`: weight {:?}, bias {}", n.name, w.shape, b.data.len());
        let (out, y) = self.fq(output(n, 0)?)?;
        Ok((LinearW { w, b: Some(b), out, bias_before_quant: true }, y))
    }

    fn conv(&self, v: &str) -> Result<(ConvW, &'a str)> {
        let n = self.next(v, "Conv")?;
        let strides = attr_ints(n, "strides");
        let pads = attr_ints(n, "pads");
        ensure!(attr_int(n, "group", 1) == 1 && attr_ints(n, "dilations").iter().all(|&d| d == 1), "Conv `{}`: groups or dilation", n.name);
        ensure!(
            strides.len() == 1 && pads.len() == 2 && pads[0] == pads[1] && strides[0] > 0 && pads[0] >= 0,
            "Conv `{}`: strides {strides:?} pads {pads:?}",
            n.name
        );
        let w = self.weight(input(n, 1)?)?;
        let b = self.bias(input(n, 2)?)?;
        ensure!(w.shape.len() == 3 && b.data.len() == w.shape[0], "Conv `{}`: weight {:?}, bias {}", n.name, w.shape, b.data.len());
        let (out, y) = self.fq(output(n, 0)?)?;
        Ok((ConvW { w, b, stride: strides[0] as usize, padding: pads[0] as usize, out }, y))
    }

    fn norm(&self, v: &str) -> Result<(NormW, &'a str)> {
        let n = self.next(v, "LayerNormalization")?;
        ensure!(attr_int(n, "axis", -1) == -1, "LayerNormalization `{}` is not over the last axis", n.name);
        let w = HostTensor::from_floats(&self.g.tensor(input(n, 1)?)?)?;
        let b = HostTensor::from_floats(&self.g.tensor(input(n, 2)?)?)?;
        ensure!(w.data.len() == b.data.len(), "LayerNormalization `{}`: {} weights, {} biases", n.name, w.data.len(), b.data.len());
        Ok((NormW { w, b, eps: attr_float(n, "epsilon", 1e-5) }, output(n, 0)?))
    }

    /// The exported exact GELU: x * 0.5 * (1 + erf(x / sqrt 2)).
    fn gelu(&self, v: &str) -> Result<&'a str> {
        let div = self.next(v, "Div")?;
        let sqrt2 = self.g.tensor(input(div, 1)?)?.scalar()?;
        ensure!((sqrt2 - std::f32::consts::SQRT_2).abs() < 1e-6, "`{v}`: a division by {sqrt2} is not GELU's");
        let erf = self.next(output(div, 0)?, "Erf")?;
        let add = self.next(output(erf, 0)?, "Add")?;
        let half = self.next(output(add, 0)?, "Mul")?;
        let mul = self.next(output(half, 0)?, "Mul")?;
        ensure!(mul.input.iter().any(|i| i == v), "`{v}`: the GELU's last product does not take its input");
        output(mul, 0)
    }

    /// A product by a scalar constant (the attention's head_dim^-1/4).
    fn scalar_mul(&self, v: &str) -> Result<(f32, &'a str)> {
        let n = self.next(v, "Mul")?;
        let c = n.input.iter().find(|i| self.g.has_tensor(i)).ok_or_else(|| anyhow!("`{v}`: the product has no constant factor"))?;
        Ok((self.g.tensor(c)?.scalar()?, output(n, 0)?))
    }

    /// The `Add` of `v` and another value `other` (a residual).
    fn residual(&self, v: &str, other: &str) -> Result<&'a str> {
        let n = self.next(v, "Add")?;
        ensure!(n.input.iter().any(|i| i == other), "`{v}` is not added to the residual `{other}`");
        output(n, 0)
    }

    fn heads(&self, q_bias_out: &str, d: usize) -> Result<usize> {
        // Reshape(q, Concat(batch, frames, heads, head_dim)): the last two are constants.
        let reshape = self.next(q_bias_out, "Reshape")?;
        let concat =
            self.g.producer(input(reshape, 1)?).filter(|n| n.op_type == "Concat").ok_or_else(|| anyhow!("the query's shape is not a Concat"))?;
        let consts: Vec<i64> = concat
            .input
            .iter()
            .filter(|i| self.g.has_tensor(i))
            .map(|i| self.g.tensor(i).and_then(|t| t.ints()))
            .collect::<Result<Vec<_>>>()?
            .concat();
        let [.., heads, head_dim] = consts[..] else { bail!("the query's shape constants {consts:?}") };
        ensure!(heads > 0 && head_dim > 0 && (heads * head_dim) as usize == d, "{heads} heads of {head_dim} for d_model {d}");
        Ok(heads as usize)
    }

    fn layer(&self, x: &'a str, norm: NormW, h: &'a str, norm_q: Fq) -> Result<(LayerW, &'a str)> {
        let mms: Vec<_> = self.g.consumers(h).iter().filter(|n| n.op_type == "MatMul").copied().collect();
        ensure!(mms.len() == 3, "the attention's normalised input feeds {} products, expected q, k and v", mms.len());
        let (mut q, mut k, mut v) = (None, None, None);
        for mm in mms {
            let (lin, bias, y) = self.matmul(mm)?;
            match bias {
                Some(b) if b.contains("q_proj") => q = Some((lin, y)),
                Some(b) if b.contains("v_proj") => v = Some((lin, y)),
                None => k = Some((lin, y)),
                Some(b) => bail!("unexpected projection bias `{b}`"),
            }
        }
        let ((q, qy), (k, ky), (v, vy)) = (q.context("no query projection")?, k.context("no key projection")?, v.context("no value projection")?);
        let d = q.w.shape[0];
        let heads = self.heads(qy, d)?;
        let (q_mul, qs) = self.scalar_mul(self.skip_layout(qy)?)?;
        let (q_scaled, qs) = self.fq(qs)?;
        let (k_mul, ks) = self.scalar_mul(self.skip_layout(ky)?)?;
        let (k_scaled, ks) = self.fq(ks)?;
        let (v_heads, vs) = self.fq(self.skip_layout(vy)?)?;
        let scores_mm = self.next(qs, "MatMul")?;
        ensure!(input(scores_mm, 1)? == ks, "the scores do not multiply the queries by the keys");
        let (scores, s) = self.fq(output(scores_mm, 0)?)?;
        let softmax = self.next(s, "Softmax")?;
        ensure!(attr_int(softmax, "axis", -1) == -1, "the attention's softmax is not over the keys");
        let (probs, p) = self.fq(output(softmax, 0)?)?;
        let ctx_mm = self.next(p, "MatMul")?;
        ensure!(input(ctx_mm, 1)? == vs, "the context does not multiply the weights by the values");
        let (context, c) = self.fq(output(ctx_mm, 0)?)?;
        let (merged, m) = self.fq(self.skip_layout(c)?)?;
        let (out, _, o) = self.matmul(self.next(m, "MatMul")?)?;
        let x = self.residual(o, x)?;
        let quant = AttentionQuant { heads, q_mul, k_mul, q_scaled, k_scaled, v_heads, scores, probs, context, merged };
        let attn = AttentionW { q, k, v, quant, out };

        let (ffn_norm, h) = self.norm(x)?;
        let (ffn_norm_q, h) = self.fq(h)?;
        let (fc1, _, y) = self.matmul(self.next(h, "MatMul")?)?;
        let (gelu_q, g) = self.fq(self.gelu(y)?)?;
        let (fc2, _, y) = self.matmul(self.next(g, "MatMul")?)?;
        let x = self.residual(y, x)?;
        Ok((LayerW { attn_norm: norm, attn_norm_q: norm_q, attn, ffn_norm, ffn_norm_q, fc1, gelu_q, fc2 }, x))
    }
}

/// Walk the graph of a Smart Turn v3 export into [`Weights`].
pub(crate) fn read(graph: &Graph) -> Result<Weights> {
    let w = Walk { g: graph };
    let features = graph.proto.input.first().map(|i| i.name.as_str()).ok_or_else(|| anyhow!("the graph has no input"))?;
    // Stem: conv(k3) + GELU, conv(k3, stride 2) + GELU, positions.
    let (input_q, v) = w.fq(features)?;
    let (conv1, v) = w.conv(v)?;
    let (gelu1_q, v) = w.fq(w.gelu(v)?)?;
    let (conv2, v) = w.conv(v)?;
    let v = w.gelu(v)?;
    let t = w.next(v, "Transpose")?;
    let add = w.next(output(t, 0)?, "Add")?;
    let pos = add.input.iter().find(|i| graph.has_tensor(i)).ok_or_else(|| anyhow!("no positional embedding after the convolutions"))?;
    let positions = HostTensor::from_floats(&graph.tensor(pos)?)?;
    ensure!(
        positions.shape.len() == 2 && positions.shape[1] == conv2.w.shape[0],
        "positions {:?} for {} channels",
        positions.shape,
        conv2.w.shape[0]
    );
    let mut x = output(add, 0)?;

    let mut layers = Vec::new();
    let (final_norm, final_q, h) = loop {
        let (norm, h) = w.norm(x)?;
        let (norm_q, h) = w.fq(h)?;
        if graph.consumers(h).iter().filter(|n| n.op_type == "MatMul").count() != 3 {
            break (norm, norm_q, h);
        }
        let (layer, next) = w.layer(x, norm, h, norm_q).with_context(|| format!("encoder layer {}", layers.len()))?;
        layers.push(layer);
        x = next;
    };
    ensure!(!layers.is_empty(), "no encoder layer found");

    // Attention pooling over frames, then the classifier.
    let (pool_hidden, _, y) = w.matmul(w.next(h, "MatMul")?)?;
    let tanh = w.next(y, "Tanh")?;
    let (pool_tanh_q, t) = w.fq(output(tanh, 0)?)?;
    let (pool_score, _, score) = w.matmul(w.next(t, "MatMul")?)?;
    let softmax = w.next(score, "Softmax")?;
    ensure!(attr_int(softmax, "axis", -1) == 1, "the pooling softmax is not over frames");
    let mul = w.next(output(softmax, 0)?, "Mul")?;
    ensure!(mul.input.iter().any(|i| i == h), "the pooling weights do not multiply the encoder output");
    let sum = w.next(output(mul, 0)?, "ReduceSum")?;
    let (pooled_q, pooled) = w.fq(output(sum, 0)?)?;
    let (cls_in, y) = w.gemm(pooled)?;
    let (cls_norm, y) = w.norm(y)?;
    let (cls_gelu_q, y) = w.fq(w.gelu(y)?)?;
    let (cls_mid, y) = w.gemm(y)?;
    let (cls_mid_gelu_q, y) = w.fq(w.gelu(y)?)?;
    let (cls_out, y) = w.gemm(y)?;
    ensure!(cls_out.w.shape[0] == 1, "the classifier ends in {} outputs, expected one", cls_out.w.shape[0]);
    let sigmoid = w.next(y, "Sigmoid")?;
    let out = output(sigmoid, 0)?;
    ensure!(graph.proto.output.iter().any(|o| o.name == out), "the sigmoid is not the graph's output");

    Ok(Weights {
        input_q,
        conv1,
        gelu1_q,
        conv2,
        positions,
        layers,
        final_norm,
        final_q,
        pool_hidden,
        pool_tanh_q,
        pool_score,
        pooled_q,
        cls_in,
        cls_norm,
        cls_gelu_q,
        cls_mid,
        cls_mid_gelu_q,
        cls_out,
    })
}
