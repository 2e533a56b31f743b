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
        /// Zero-copy slices of the file buffer (see [`super::parse`]).
        #[prost(bytes = "bytes", tag = "9")]
        pub raw_data: bytes::Bytes,
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

/// One initializer: dims, element type, and its values read on demand from the file's bytes
/// (8-bit weights are never widened to f32 before they are dequantized into their final buffer).
struct Init<'a> {
    dims: Vec<usize>,
    dtype: i32,
    t: &'a proto::TensorProto,
}

impl Init<'_> {
    fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Element `i` as f32 (8-bit values exactly).
    fn at(&self, i: usize) -> f32 {
        let raw = &self.t.raw_data;
        match self.dtype {
            FLOAT if !raw.is_empty() => f32::from_le_bytes([raw[4 * i], raw[4 * i + 1], raw[4 * i + 2], raw[4 * i + 3]]),
            FLOAT => self.t.float_data[i],
            UINT8 if !raw.is_empty() => raw[i] as f32,
            INT8 if !raw.is_empty() => raw[i] as i8 as f32,
            _ => self.t.int32_data[i] as f32,
        }
    }

    fn to_vec(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.at(i)).collect()
    }
}

fn decode_init(t: &proto::TensorProto) -> Result<Option<Init<'_>>> {
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
    // Every length is checked against the data actually present, so a corrupt file is an error
    // here and never an out-of-bounds read or a huge allocation later.
    let present = match t.data_type {
        FLOAT if !t.raw_data.is_empty() => t.raw_data.len() / 4,
        FLOAT => t.float_data.len(),
        UINT8 | INT8 if !t.raw_data.is_empty() => t.raw_data.len(),
        UINT8 | INT8 => t.int32_data.len(),
        // Shapes, axes and other integer constants: not weights.
        _ => return Ok(None),
    };
    if present != n || (t.data_type == FLOAT && !t.raw_data.is_empty() && t.raw_data.len() != 4 * n) {
        bail!("initializer `{}`: data for {present} values, shape {dims:?} needs {n}", t.name);
    }
    Ok(Some(Init { dims, dtype: t.data_type, t }))
}

/// `(q - zero_point) * scale`, per tensor (scalar scale) or per channel along `axis`.
fn dequantize(q: &Init, scale: &Init, zero: &Init, axis: usize) -> Result<HostTensor> {
    let (scale_v, zero_v) = (scale.to_vec(), zero.to_vec());
    if !matches!(q.dtype, INT8 | UINT8) {
        bail!("expected an 8-bit tensor, got ONNX type {}", q.dtype);
    }
    let channels = if scale_v.len() == 1 {
        1
    } else {
        let c = *q.dims.get(axis).ok_or_else(|| anyhow!("quantization axis {axis} out of range for {:?}", q.dims))?;
        if scale_v.len() != c || zero_v.len() != c {
            bail!("{} scales / {} zero points for {c} channels", scale_v.len(), zero_v.len());
        }
        c
    };
    if zero_v.len() != channels {
        bail!("{} zero points for {channels} scales", zero_v.len());
    }
    // Elements between consecutive channel indices along `axis`.
    let inner: usize = q.dims.get(axis + 1..).map_or(1, |d| d.iter().product());
    let data = (0..q.len())
        .map(|i| {
            let c = if channels == 1 { 0 } else { (i / inner) % channels };
            (q.at(i) - zero_v[c]) * scale_v[c]
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
    parse(bytes).with_context(|| format!("parsing {} as the Kokoro ONNX export", path.display()))
}

/// [`load`] from bytes in memory. Initializer data stays in this one buffer (prost slices it
/// without copying) until each parameter is dequantized into its own.
pub fn parse(bytes: impl Into<bytes::Bytes>) -> Result<HashMap<String, HostTensor>> {
    use prost::Message;
    let model = proto::ModelProto::decode(bytes.into()).map_err(|e| anyhow!("not an ONNX model: {e}"))?;
    let graph = model.graph.ok_or_else(|| anyhow!("ONNX model without a graph"))?;
    let mut inits: HashMap<&str, Init<'_>> = HashMap::new();
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
                params.insert(format!("{path}.weight"), HostTensor::new(w.dims.clone(), w.to_vec())?);
            }
            "MatMul" => {
                // Float products: attention scores (no initializer) and the source module's
                // 9 -> 1 harmonic merge, the only float linear layer.
                let Ok(w) = input(node, 1) else { continue };
                let Some(init) = inits.get(w) else { continue };
                let t = HostTensor::new(init.dims.clone(), init.to_vec())?.t()?;
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
                    let bv = b.to_vec();
                    let bd = &bv[d * 2 * four_h..(d + 1) * 2 * four_h];
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
            if let std::collections::hash_map::Entry::Vacant(e) = params.entry(name) {
                e.insert(HostTensor::new(init.dims.clone(), init.to_vec())?);
            }
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

    fn tensor(dims: &[i64], data_type: i32, raw: Vec<u8>) -> proto::TensorProto {
        proto::TensorProto { dims: dims.to_vec(), data_type, raw_data: raw.into(), ..Default::default() }
    }

    #[test]
    fn per_channel_dequantization() {
        let q = tensor(&[2, 3], INT8, [1i8, 2, 3, -1, -2, -3].iter().map(|&v| v as u8).collect());
        let s = tensor(&[3], FLOAT, [1f32, 0.5, 2.].iter().flat_map(|v| v.to_le_bytes()).collect());
        let z = tensor(&[3], INT8, vec![0, 2, 1]);
        let (q, s, z) = (decode_init(&q).unwrap().unwrap(), decode_init(&s).unwrap().unwrap(), decode_init(&z).unwrap().unwrap());
        let t = dequantize(&q, &s, &z, 1).unwrap();
        assert_eq!(t.data, vec![1., 0., 4., -1., -2., -8.]);
    }

    #[test]
    fn lengths_are_checked_against_the_data() {
        // Claims 1000x1000 values but carries 3 bytes: an error, not a read past the end.
        assert!(decode_init(&tensor(&[1000, 1000], INT8, vec![1, 2, 3])).is_err());
        assert!(decode_init(&tensor(&[2], FLOAT, vec![0; 7])).is_err());
        assert!(decode_init(&tensor(&[-1], FLOAT, vec![])).is_err());
        assert!(decode_init(&tensor(&[i64::MAX, i64::MAX], INT8, vec![])).is_err());
    }

    #[test]
    fn gate_reorder() {
        // Four gates of hidden 1, rows of 1: ONNX i o f c -> PyTorch i f c o.
        assert_eq!(onnx_gates_to_torch(&[0., 1., 2., 3.], 1, 1), vec![0., 2., 3., 1.]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x00\x01\x02", b"not an onnx file at all", &[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]] {
            let _ = parse(bytes.to_vec()); // Err or an empty graph, never a panic
        }
    }
}
