//! Kokoro weights from the int8 ONNX export (`kokoro-v1.0.int8.onnx`).
//!
//! Only the parts of the ONNX protobuf that hold weights are decoded (graph nodes and
//! initializers; prost skips every other field). The export was quantized dynamically by
//! onnxruntime: linear layers are `MatMulInteger` with int8 weights laid out (in, out) and
//! per-output-column scales/zero points, convolutions are `ConvInteger` with per-tensor uint8
//! weights (weight norm already folded in), LSTMs are `DynamicQuantizeLSTM` with ONNX's gate
//! order, embeddings are a `Gather` of int8 rows followed by `DequantizeLinear`. Everything is
//! dequantized here, `(q - zero_point) * scale`, to f32 and renamed to the PyTorch checkpoint's
//! parameter names (weight norm folded), so the model code has one naming for both sources.
//!
//! Names come from the graph, not from guesses: each weight-consuming node carries the PyTorch
//! module path as its scope (`/decoder/decoder/decode.0/conv1/Conv_quant` ->
//! `decoder.decode.0.conv1`); float parameters that survived as initializers already carry their
//! dotted name (`encoder.predictor.F0.0.conv1.bias` -> `predictor.F0.0.conv1.bias`). Zero points
//! are looked up through the node inputs, because the exporter deduplicated equal zero points
//! across layers.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// The subset of `onnx.proto3` we read. Field numbers are ONNX's.
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "3")]
        pub name: String,
        #[prost(string, tag = "4")]
        pub op_type: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(int32, repeated, tag = "5")]
        pub int32_data: Vec<i32>,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }
}

const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;

/// A dense f32 tensor on the host: shape + row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("shape {shape:?} needs {n} values, got {}", data.len());
        }
        Ok(Self { shape, data })
    }

    /// Transpose a 2-D tensor.
    fn t(&self) -> Result<Self> {
        let [r, c] = self.shape[..] else { bail!("transpose of a {}-D tensor", self.shape.len()) };
        let mut out = vec![0f32; r * c];
        for i in 0..r {
            for j in 0..c {
                out[j * r + i] = self.data[i * c + j];
            }
        }
        Self::new(vec![c, r], out)
    }
}

/// One initializer, raw: element type, dims and values widened to f32 (int8/uint8 exactly).
struct Init {
    dims: Vec<usize>,
    dtype: i32,
    values: Vec<f32>,
}

fn decode_init(t: &proto::TensorProto) -> Result<Option<Init>> {
    if t.data_location == 1 {
        bail!("initializer `{}` uses external data, which this loader does not read", t.name);
    }
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            bail!("initializer `{}` has a negative dimension", t.name);
        }
        dims.push(d as usize);
    }
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("initializer `{}` is too large", t.name))?;
    let values: Vec<f32> = match t.data_type {
        FLOAT if !t.raw_data.is_empty() => {
            if t.raw_data.len() != n * 4 {
                bail!("initializer `{}`: {} bytes for {n} floats", t.name, t.raw_data.len());
            }
            t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        FLOAT => t.float_data.clone(),
        UINT8 if !t.raw_data.is_empty() => t.raw_data.iter().map(|&b| b as f32).collect(),
        INT8 if !t.raw_data.is_empty() => t.raw_data.iter().map(|&b| b as i8 as f32).collect(),
        // Without raw_data, ONNX stores 8-bit values in int32_data.
        UINT8 | INT8 => t.int32_data.iter().map(|&v| v as f32).collect(),
        // Shapes, axes and other integer constants: not weights.
        _ => return Ok(None),
    };
    if values.len() != n {
        bail!("initializer `{}`: {} values for shape {dims:?}", t.name, values.len());
    }
    Ok(Some(Init { dims, dtype: t.data_type, values }))
}

/// `(q - zero_point) * scale`, per tensor (scalar scale) or per channel along `axis`.
fn dequantize(q: &Init, scale: &Init, zero: &Init, axis: usize) -> Result<HostTensor> {
    if !matches!(q.dtype, INT8 | UINT8) {
        bail!("expected an 8-bit tensor, got ONNX type {}", q.dtype);
    }
    let channels = if scale.values.len() == 1 {
        1
    } else {
        let c = *q.dims.get(axis).ok_or_else(|| anyhow!("quantization axis {axis} out of range for {:?}", q.dims))?;
        if scale.values.len() != c || zero.values.len() != c {
            bail!("{} scales / {} zero points for {c} channels", scale.values.len(), zero.values.len());
        }
        c
    };
    if zero.values.len() != channels {
        bail!("{} zero points for {channels} scales", zero.values.len());
    }
    // Elements between consecutive channel indices along `axis`.
    let inner: usize = q.dims[axis + 1..].iter().product();
    let data = q
        .values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = if channels == 1 { 0 } else { (i / inner) % channels };
            (v - zero.values[c]) * scale.values[c]
        })
        .collect();
    HostTensor::new(q.dims.clone(), data)
}

/// ONNX node scope -> PyTorch module path (see the module docs).
fn module_path(node_name: &str) -> Result<String> {
    let mut segs: Vec<&str> = node_name.split('/').filter(|s| !s.is_empty()).collect();
    segs.pop(); // the op itself (`Conv_quant`, `MatMul_quant`, ...)
    let mut out: Vec<&str> = Vec::new();
    match segs.first() {
        Some(&"encoder") => {
            segs.remove(0);
            // The predictor's F0/N branches run in a method the exporter did not scope.
            if let Some(first) = segs.first() {
                let predictor_only = ["F0.", "N.", "F0_proj", "N_proj", "shared"];
                if predictor_only.iter().any(|p| first.starts_with(p) || *first == p.trim_end_matches('.')) {
                    out.push("predictor");
                }
            }
        }
        Some(&"decoder") => {
            segs.remove(0);
        }
        _ => bail!("node `{node_name}` is outside the encoder and decoder scopes"),
    }
    for (i, s) in segs.iter().enumerate() {
        // `cnn.0/cnn.0.0`: a Sequential's scope followed by its child's full name.
        if segs.get(i + 1).is_some_and(|next| next.starts_with(&format!("{s}."))) {
            continue;
        }
        out.push(s);
    }
    if out.is_empty() {
        bail!("node `{node_name}` has no module scope");
    }
    Ok(out.join("."))
}

/// Parameter name of a float initializer that kept its PyTorch name, if it did.
fn torch_name(init_name: &str) -> Option<String> {
    if init_name.contains('/') || init_name.contains("::") {
        return None;
    }
    let rest = init_name.strip_prefix("encoder.").or_else(|| init_name.strip_prefix("decoder."))?;
    Some(rest.to_string())
}

/// Reorder LSTM gate blocks from ONNX (input, output, forget, cell) to PyTorch (input, forget,
/// cell, output) along the first axis of a (4H, ...) tensor.
fn onnx_gates_to_torch(data: &[f32], hidden: usize, row: usize) -> Vec<f32> {
    let block = hidden * row;
    let mut out = Vec::with_capacity(data.len());
    for onnx_gate in [0, 2, 3, 1] {
        out.extend_from_slice(&data[onnx_gate * block..(onnx_gate + 1) * block]);
    }
    out
}

/// Input `i` of a node, which must be present.
fn input(n: &proto::NodeProto, i: usize) -> Result<&str> {
    n.input.get(i).map(|s| s.as_str()).filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("node `{}` lacks input {i}", n.name))
}

/// All Kokoro parameters from the ONNX file, by PyTorch name.
pub fn load(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parsing {} as the Kokoro ONNX export", path.display()))
}

/// [`load`] from bytes in memory.
pub fn parse(bytes: &[u8]) -> Result<HashMap<String, HostTensor>> {
    use prost::Message;
    let model = proto::ModelProto::decode(bytes).map_err(|e| anyhow!("not an ONNX model: {e}"))?;
    let graph = model.graph.ok_or_else(|| anyhow!("ONNX model without a graph"))?;
    let mut inits: HashMap<&str, Init> = HashMap::new();
    for t in &graph.initializer {
        if let Some(init) = decode_init(t)? {
            inits.insert(t.name.as_str(), init);
        }
    }
    let get = |name: &str| inits.get(name).ok_or_else(|| anyhow!("initializer `{name}` missing"));
    // The scale of a quantized weight `X_quantized` is `X_scale` (scales were not deduplicated).
    let scale_of = |q: &str| -> Result<&Init> {
        let base = q.strip_suffix("_quantized").ok_or_else(|| anyhow!("`{q}` is not a quantized initializer"))?;
        get(&format!("{base}_scale"))
    };
    let consumers = {
        let mut m: HashMap<&str, Vec<&proto::NodeProto>> = HashMap::new();
        for n in &graph.node {
            for i in &n.input {
                m.entry(i.as_str()).or_default().push(n);
            }
        }
        m
    };

    let mut params: HashMap<String, HostTensor> = HashMap::new();
    let mut done: std::collections::HashSet<&str> = Default::default();
    for node in &graph.node {
        match node.op_type.as_str() {
            "MatMulInteger" => {
                let w = input(node, 1)?;
                if !done.insert(w) {
                    continue; // ALBERT's shared layer, applied 12 times
                }
                let q = get(w)?;
                let weight = dequantize(q, scale_of(w)?, get(input(node, 3)?)?, 1)?.t()?;
                let path = module_path(&node.name)?;
                params.insert(format!("{path}.weight"), weight);
            }
            "ConvInteger" => {
                let w = input(node, 1)?;
                if !done.insert(w) {
                    continue;
                }
                let weight = dequantize(get(w)?, scale_of(w)?, get(input(node, 3)?)?, 0)?;
                params.insert(format!("{}.weight", module_path(&node.name)?), weight);
            }
            "Conv" | "ConvTranspose" => {
                let path = module_path(&node.name)?;
                if path.contains("istft") {
                    continue; // the exporter's inverse-STFT basis: computed, not learned
                }
                let w = get(input(node, 1)?)?;
                params.insert(format!("{path}.weight"), HostTensor::new(w.dims.clone(), w.values.clone())?);
            }
            "MatMul" => {
                // Float products: attention scores (no initializer) and the source module's
                // 9 -> 1 harmonic merge, the only float linear layer.
                let Ok(w) = input(node, 1) else { continue };
                let Some(init) = inits.get(w) else { continue };
                let t = HostTensor::new(init.dims.clone(), init.values.clone())?.t()?;
                params.insert(format!("{}.weight", module_path(&node.name)?), t);
            }
            "Gather" => {
                let w = input(node, 0)?;
                let Some(q) = inits.get(w) else { continue };
                if !matches!(q.dtype, INT8 | UINT8) {
                    continue;
                }
                // The DequantizeLinear after the gather holds this table's zero point.
                let out = node.output.first().ok_or_else(|| anyhow!("gather without output"))?;
                let dq = consumers
                    .get(out.as_str())
                    .and_then(|c| c.iter().find(|n| n.op_type == "DequantizeLinear"))
                    .ok_or_else(|| anyhow!("quantized embedding `{w}` without DequantizeLinear"))?;
                let table = dequantize(q, get(input(dq, 1)?)?, get(input(dq, 2)?)?, 0)?;
                let name = torch_name(w.strip_suffix("_quantized").unwrap_or(w)).ok_or_else(|| anyhow!("embedding `{w}` has no PyTorch name"))?;
                params.insert(name, table);
            }
            "DynamicQuantizeLSTM" => {
                let path = module_path(&node.name)?;
                let (w, r, b) = (get(input(node, 1)?)?, get(input(node, 2)?)?, get(input(node, 3)?)?);
                let w = dequantize(w, get(input(node, 8)?)?, get(input(node, 9)?)?, 0)?;
                let r = dequantize(r, get(input(node, 10)?)?, get(input(node, 11)?)?, 0)?;
                let [dirs, in_dim, four_h] = w.shape[..] else { bail!("LSTM `{path}`: W shape {:?}", w.shape) };
                let hidden = four_h / 4;
                if dirs != 2 || r.shape != [2, hidden, four_h] || b.dims != [2, 2 * four_h] {
                    bail!("LSTM `{path}`: unexpected shapes W {:?} R {:?} B {:?}", w.shape, r.shape, b.dims);
                }
                for (d, suffix) in [(0, ""), (1, "_reverse")] {
                    // W is (in, 4H) per direction here; PyTorch keeps (4H, in).
                    let wd = HostTensor::new(vec![in_dim, four_h], w.data[d * in_dim * four_h..(d + 1) * in_dim * four_h].to_vec())?.t()?;
                    let rd = HostTensor::new(vec![hidden, four_h], r.data[d * hidden * four_h..(d + 1) * hidden * four_h].to_vec())?.t()?;
                    let bd = &b.values[d * 2 * four_h..(d + 1) * 2 * four_h];
                    params.insert(
                        format!("{path}.weight_ih_l0{suffix}"),
                        HostTensor::new(vec![four_h, in_dim], onnx_gates_to_torch(&wd.data, hidden, in_dim))?,
                    );
                    params.insert(
                        format!("{path}.weight_hh_l0{suffix}"),
                        HostTensor::new(vec![four_h, hidden], onnx_gates_to_torch(&rd.data, hidden, hidden))?,
                    );
                    params
                        .insert(format!("{path}.bias_ih_l0{suffix}"), HostTensor::new(vec![four_h], onnx_gates_to_torch(&bd[..four_h], hidden, 1))?);
                    params
                        .insert(format!("{path}.bias_hh_l0{suffix}"), HostTensor::new(vec![four_h], onnx_gates_to_torch(&bd[four_h..], hidden, 1))?);
                }
            }
            _ => {}
        }
    }
    // Float parameters that kept their names: biases, norms, Snake alphas.
    for t in &graph.initializer {
        let Some(init) = inits.get(t.name.as_str()) else { continue };
        if init.dtype != FLOAT || t.name.ends_with("_scale") {
            continue;
        }
        if let Some(name) = torch_name(&t.name) {
            params.entry(name).or_insert(HostTensor::new(init.dims.clone(), init.values.clone())?);
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths() {
        let cases = [
            ("/encoder/text_encoder/cnn.0/cnn.0.0/Conv_quant", "text_encoder.cnn.0.0"),
            ("/encoder/F0.0/conv1/Conv_quant", "predictor.F0.0.conv1"),
            ("/encoder/N_proj/Conv_quant", "predictor.N_proj"),
            ("/encoder/shared/LSTM_quant", "predictor.shared"),
            ("/encoder/predictor/text_encoder/lstms.0/LSTM_quant", "predictor.text_encoder.lstms.0"),
            (
                "/encoder/bert/encoder/albert_layer_groups.0/albert_layers.0/ffn/MatMul_quant",
                "bert.encoder.albert_layer_groups.0.albert_layers.0.ffn",
            ),
            ("/decoder/decoder/asr_res/asr_res.0/Conv_quant", "decoder.asr_res.0"),
            ("/decoder/decoder/generator/resblocks.0/convs1.0/Conv_quant", "decoder.generator.resblocks.0.convs1.0"),
            ("/decoder/decoder/generator/m_source/l_linear/MatMul", "decoder.generator.m_source.l_linear"),
        ];
        for (node, want) in cases {
            assert_eq!(module_path(node).unwrap(), want, "{node}");
        }
        assert!(module_path("/other/x/Conv").is_err());
    }

    #[test]
    fn per_channel_dequantization() {
        let q = Init { dims: vec![2, 3], dtype: INT8, values: vec![1., 2., 3., -1., -2., -3.] };
        let s = Init { dims: vec![3], dtype: FLOAT, values: vec![1., 0.5, 2.] };
        let z = Init { dims: vec![3], dtype: INT8, values: vec![0., 2., 1.] };
        let t = dequantize(&q, &s, &z, 1).unwrap();
        assert_eq!(t.data, vec![1., 0., 4., -1., -2., -8.]);
    }

    #[test]
    fn gate_reorder() {
        // Four gates of hidden 1, rows of 1: ONNX i o f c -> PyTorch i f c o.
        assert_eq!(onnx_gates_to_torch(&[0., 1., 2., 3.], 1, 1), vec![0., 2., 3., 1.]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x00\x01\x02", b"not an onnx file at all", &[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]] {
            let _ = parse(bytes); // Err or an empty graph, never a panic
        }
        assert!(parse(b"\x3a\x05\x0a\x03abc").is_ok_and(|p| p.is_empty()) || parse(b"\x3a\x05\x0a\x03abc").is_err());
    }
}
