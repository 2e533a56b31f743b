//! The one ONNX reader of the model crates (Kokoro, Silero VAD, Smart Turn): no inference, only
//! what a model crate needs to take its weights and structure out of an `.onnx` file.
//!
//! - [`Model::parse`] decodes the protobuf subset in [`proto`] (graph nodes with attributes and
//!   subgraphs, initializers); prost slices tensor bytes out of the file buffer without copying.
//! - [`Graph`] indexes one graph: tensors by name (initializers and `Constant` node values), the
//!   node producing each value and the nodes consuming it, and every nested graph.
//! - [`Tensor`] is a checked view of one tensor: its length is compared with the bytes actually
//!   present when the view is made, so a corrupt or lying file is an error there and never an
//!   out-of-bounds read or a huge allocation later. Values are read on demand (8-bit weights are
//!   never widened before they are dequantized into their final buffer).
//! - [`dequantize`] is ONNX's `DequantizeLinear`: `(q - zero_point) * scale`, per tensor or per
//!   channel along an axis.
//!
//! Each model crate keeps only its own mapping from graph names to its parameters.

pub mod proto;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// ONNX element types this reader decodes (`TensorProto.DataType`).
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
}

/// `TensorProto.data_location` of a tensor whose bytes live in another file.
const EXTERNAL: i32 = 1;

/// A decoded ONNX file.
#[derive(Debug, Clone)]
pub struct Model {
    pub proto: proto::ModelProto,
}

impl Model {
    /// Read and decode `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// Decode an ONNX file held in memory. Tensor data stays in this one buffer.
    pub fn parse(bytes: impl Into<bytes::Bytes>) -> Result<Self> {
        use prost::Message;
        let proto = proto::ModelProto::decode(bytes.into()).map_err(|e| anyhow!("not an ONNX model: {e}"))?;
        Ok(Self { proto })
    }

    /// The main graph, indexed.
    pub fn graph(&self) -> Result<Graph<'_>> {
        let g = self.proto.graph.as_ref().ok_or_else(|| anyhow!("ONNX model without a graph"))?;
        Ok(Graph::new(g))
    }
}

/// One graph, indexed by value name.
pub struct Graph<'a> {
    pub proto: &'a proto::GraphProto,
    tensors: HashMap<&'a str, &'a proto::TensorProto>,
    producers: HashMap<&'a str, &'a proto::NodeProto>,
    consumers: HashMap<&'a str, Vec<&'a proto::NodeProto>>,
}

impl<'a> Graph<'a> {
    pub fn new(g: &'a proto::GraphProto) -> Self {
        let mut tensors: HashMap<&str, &proto::TensorProto> = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut producers = HashMap::new();
        let mut consumers: HashMap<&str, Vec<&proto::NodeProto>> = HashMap::new();
        for n in &g.node {
            if n.op_type == "Constant" {
                if let (Some(out), Some(t)) = (n.output.first(), attribute(n, "value").and_then(|a| a.t.as_ref())) {
                    tensors.insert(out.as_str(), t);
                }
            }
            for o in &n.output {
                producers.insert(o.as_str(), n);
            }
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                consumers.entry(i.as_str()).or_default().push(n);
            }
        }
        Self { proto: g, tensors, producers, consumers }
    }

    pub fn nodes(&self) -> &'a [proto::NodeProto] {
        &self.proto.node
    }

    /// Names of the tensors this graph holds (initializers and `Constant` outputs).
    pub fn tensor_names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.tensors.keys().copied()
    }

    /// Whether `name` is a tensor held by this graph (not a computed value).
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name` held by this graph, checked (see [`Tensor::new`]).
    pub fn tensor(&self, name: &str) -> Result<Tensor<'a>> {
        let (name, t) = self.tensors.get_key_value(name).ok_or_else(|| anyhow!("the graph holds no tensor `{name}`"))?;
        Tensor::new(name, t)
    }

    /// The node whose output is `value`.
    pub fn producer(&self, value: &str) -> Option<&'a proto::NodeProto> {
        self.producers.get(value).copied()
    }

    /// The nodes reading `value`, in graph order.
    pub fn consumers(&self, value: &str) -> &[&'a proto::NodeProto] {
        self.consumers.get(value).map_or(&[], |v| v.as_slice())
    }

    /// The only node reading `value` with operator `op`.
    pub fn consumer(&self, value: &str, op: &str) -> Result<&'a proto::NodeProto> {
        let mut it = self.consumers(value).iter().filter(|n| n.op_type == op);
        match (it.next(), it.next()) {
            (Some(n), None) => Ok(n),
            (None, _) => bail!("no {op} node reads `{value}`"),
            _ => bail!("several {op} nodes read `{value}`"),
        }
    }

    /// This graph and every graph nested in its nodes' attributes (`If`/`Loop`/`Scan` bodies),
    /// depth first.
    pub fn all_graphs(&self) -> Vec<Graph<'a>> {
        fn walk<'a>(g: &'a proto::GraphProto, out: &mut Vec<Graph<'a>>) {
            out.push(Graph::new(g));
            for n in &g.node {
                for a in &n.attribute {
                    if let Some(sub) = &a.g {
                        walk(sub, out);
                    }
                    for sub in &a.graphs {
                        walk(sub, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self.proto, &mut out);
        out
    }
}

/// The attribute `name` of a node.
pub fn attribute<'n>(n: &'n proto::NodeProto, name: &str) -> Option<&'n proto::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// Integer attribute `name`, or `default` when absent.
pub fn attr_int(n: &proto::NodeProto, name: &str, default: i64) -> i64 {
    attribute(n, name).map_or(default, |a| a.i)
}

/// Float attribute `name`, or `default` when absent.
pub fn attr_float(n: &proto::NodeProto, name: &str, default: f32) -> f32 {
    attribute(n, name).map_or(default, |a| a.f)
}

/// Integer-list attribute `name` (empty when absent).
pub fn attr_ints<'n>(n: &'n proto::NodeProto, name: &str) -> &'n [i64] {
    attribute(n, name).map_or(&[], |a| a.ints.as_slice())
}

/// Input `i` of a node, which must be present (ONNX marks a skipped optional input by "").
pub fn input(n: &proto::NodeProto, i: usize) -> Result<&str> {
    n.input.get(i).map(|s| s.as_str()).filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("{} node `{}` lacks input {i}", n.op_type, n.name))
}

/// Output `i` of a node, which must be present.
pub fn output(n: &proto::NodeProto, i: usize) -> Result<&str> {
    n.output.get(i).map(|s| s.as_str()).filter(|s| !s.is_empty()).ok_or_else(|| anyhow!("{} node `{}` lacks output {i}", n.op_type, n.name))
}

/// A checked view of one tensor: shape, element type, values read on demand.
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    pub name: &'a str,
    pub dtype: i32,
    t: &'a proto::TensorProto,
    len: usize,
}

impl std::fmt::Debug for Tensor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {:?} type {})", self.name, self.t.dims, self.dtype)
    }
}

impl<'a> Tensor<'a> {
    /// Check `t`: no external data, non-negative dimensions whose product does not overflow, and
    /// exactly that many values present for the element types this reader decodes. Other element
    /// types are accepted here and refused when read.
    pub fn new(name: &'a str, t: &'a proto::TensorProto) -> Result<Self> {
        if t.data_location == EXTERNAL {
            bail!("tensor `{name}` is stored outside the ONNX file (external data is not supported)");
        }
        let mut len = 1usize;
        for &d in &t.dims {
            let d = usize::try_from(d).map_err(|_| anyhow!("tensor `{name}` has a negative dimension {d}"))?;
            len = len.checked_mul(d).ok_or_else(|| anyhow!("tensor `{name}`: shape {:?} overflows", t.dims))?;
        }
        let raw = t.raw_data.len();
        let (width, listed) = match t.data_type {
            dtype::FLOAT => (4, t.float_data.len()),
            dtype::UINT8 | dtype::INT8 => (1, t.int32_data.len()),
            dtype::INT32 => (4, t.int32_data.len()),
            dtype::INT64 => (8, t.int64_data.len()),
            _ => return Ok(Self { name, dtype: t.data_type, t, len }),
        };
        let present = if raw > 0 { raw / width } else { listed };
        if present != len || (raw > 0 && raw != len * width) {
            bail!("tensor `{name}`: shape {:?} needs {len} values, the file holds {present}", t.dims);
        }
        Ok(Self { name, dtype: t.data_type, t, len })
    }

    pub fn dims(&self) -> Vec<usize> {
        self.t.dims.iter().map(|&d| d as usize).collect()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check_numeric(&self) -> Result<()> {
        match self.dtype {
            dtype::FLOAT | dtype::UINT8 | dtype::INT8 | dtype::INT32 | dtype::INT64 => Ok(()),
            other => bail!("tensor `{}` has ONNX element type {other}, which this reader does not decode", self.name),
        }
    }

    /// Element `i` as f32 (8-bit and int32 values exactly). `i < len()`, element type checked by
    /// the caller ([`Tensor::to_f32`], [`dequantize`]).
    fn at(&self, i: usize) -> f32 {
        let raw = &self.t.raw_data;
        if raw.is_empty() {
            return match self.dtype {
                dtype::FLOAT => self.t.float_data[i],
                dtype::INT64 => self.t.int64_data[i] as f32,
                _ => self.t.int32_data[i] as f32,
            };
        }
        match self.dtype {
            dtype::FLOAT => f32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes")),
            dtype::UINT8 => raw[i] as f32,
            dtype::INT8 => raw[i] as i8 as f32,
            dtype::INT32 => i32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes")) as f32,
            _ => i64::from_le_bytes(raw[8 * i..8 * i + 8].try_into().expect("8 bytes")) as f32,
        }
    }

    /// Every value as f32.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.check_numeric()?;
        Ok((0..self.len).map(|i| self.at(i)).collect())
    }

    /// A float tensor's values; an error for any other element type.
    pub fn floats(&self) -> Result<Vec<f32>> {
        if self.dtype != dtype::FLOAT {
            bail!("tensor `{}` has ONNX element type {}, expected float32 (1)", self.name, self.dtype);
        }
        self.to_f32()
    }

    /// The one value of a scalar (or one-element) tensor, as f32.
    pub fn scalar(&self) -> Result<f32> {
        self.check_numeric()?;
        if self.len != 1 {
            bail!("tensor `{}` has {} values, expected one", self.name, self.len);
        }
        Ok(self.at(0))
    }

    /// An integer tensor's values (shapes, axes, indices).
    pub fn ints(&self) -> Result<Vec<i64>> {
        let raw = &self.t.raw_data;
        match self.dtype {
            dtype::INT64 if raw.is_empty() => Ok(self.t.int64_data.clone()),
            dtype::INT64 => Ok(raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()),
            dtype::INT32 | dtype::INT8 | dtype::UINT8 => Ok((0..self.len).map(|i| self.at(i) as i64).collect()),
            other => bail!("tensor `{}` has ONNX element type {other}, expected integers", self.name),
        }
    }
}

/// A dense f32 tensor on the host: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            bail!("shape {shape:?} needs {n} values, got {}", data.len());
        }
        Ok(Self { shape, data })
    }

    /// A float tensor of the file, as it is.
    pub fn from_floats(t: &Tensor) -> Result<Self> {
        Self::new(t.dims(), t.floats()?)
    }

    /// Transpose of a 2-D tensor.
    pub fn t(&self) -> Result<Self> {
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

/// ONNX `DequantizeLinear`: `(q - zero_point) * scale`, per tensor (one scale) or per channel
/// along `axis` (one scale and zero point per index of that axis). `q` is 8-bit or int32 (biases).
pub fn dequantize(q: &Tensor, scale: &Tensor, zero: &Tensor, axis: usize) -> Result<HostTensor> {
    if !matches!(q.dtype, dtype::INT8 | dtype::UINT8 | dtype::INT32) {
        bail!("`{}`: expected an 8-bit or int32 quantized tensor, got ONNX type {}", q.name, q.dtype);
    }
    let (scale_v, zero_v) = (scale.floats()?, zero.to_f32()?);
    let dims = q.dims();
    let channels = if scale_v.len() == 1 {
        1
    } else {
        let c = *dims.get(axis).ok_or_else(|| anyhow!("`{}`: quantization axis {axis} out of range for {dims:?}", q.name))?;
        if scale_v.len() != c {
            bail!("`{}`: {} scales for {c} channels", q.name, scale_v.len());
        }
        c
    };
    if zero_v.len() != channels {
        bail!("`{}`: {} zero points for {channels} scales", q.name, zero_v.len());
    }
    // Elements between consecutive channel indices along `axis`.
    let inner: usize = dims.get(axis + 1..).map_or(1, |d| d.iter().product());
    let data = (0..q.len())
        .map(|i| {
            let c = if channels == 1 { 0 } else { (i / inner) % channels };
            (q.at(i) - zero_v[c]) * scale_v[c]
        })
        .collect();
    HostTensor::new(dims, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: &[i64], data_type: i32, raw: Vec<u8>) -> proto::TensorProto {
        proto::TensorProto { dims: dims.to_vec(), data_type, raw_data: raw.into(), ..Default::default() }
    }

    #[test]
    fn per_channel_dequantization() {
        let q = tensor(&[2, 3], dtype::INT8, [1i8, 2, 3, -1, -2, -3].iter().map(|&v| v as u8).collect());
        let s = tensor(&[3], dtype::FLOAT, [1f32, 0.5, 2.].iter().flat_map(|v| v.to_le_bytes()).collect());
        let z = tensor(&[3], dtype::INT8, vec![0, 2, 1]);
        let (q, s, z) = (Tensor::new("q", &q).unwrap(), Tensor::new("s", &s).unwrap(), Tensor::new("z", &z).unwrap());
        assert_eq!(dequantize(&q, &s, &z, 1).unwrap().data, vec![1., 0., 4., -1., -2., -8.]);
        // Per row (axis 0) with the first two scales would be a count mismatch.
        assert!(dequantize(&q, &s, &z, 0).is_err());
    }

    #[test]
    fn lengths_are_checked_against_the_data() {
        // Claims 1000x1000 values but carries 3 bytes: an error, not a read past the end.
        assert!(Tensor::new("a", &tensor(&[1000, 1000], dtype::INT8, vec![1, 2, 3])).is_err());
        assert!(Tensor::new("b", &tensor(&[2], dtype::FLOAT, vec![0; 7])).is_err());
        assert!(Tensor::new("c", &tensor(&[-1], dtype::FLOAT, vec![])).is_err());
        assert!(Tensor::new("d", &tensor(&[i64::MAX, i64::MAX], dtype::INT8, vec![])).is_err());
        assert!(Tensor::new("e", &tensor(&[3], dtype::INT64, vec![0; 16])).is_err());
        let ok = tensor(&[2], dtype::INT64, [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect());
        assert_eq!(Tensor::new("f", &ok).unwrap().ints().unwrap(), vec![7, -1]);
        // An unknown element type is accepted as a view and refused when read.
        let g = tensor(&[1], 16, vec![0, 0]);
        let other = Tensor::new("g", &g).unwrap();
        assert!(other.to_f32().is_err());
    }

    #[test]
    fn transpose() {
        let t = HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap().t().unwrap();
        assert_eq!((t.shape, t.data), (vec![3, 2], vec![1., 4., 2., 5., 3., 6.]));
    }

    #[test]
    fn graph_index() {
        use proto::*;
        let node = |op: &str, i: &[&str], o: &[&str]| NodeProto {
            op_type: op.into(),
            input: i.iter().map(|s| s.to_string()).collect(),
            output: o.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut c = node("Constant", &[], &["k"]);
        c.attribute.push(AttributeProto {
            name: "value".into(),
            t: Some(tensor(&[], dtype::FLOAT, 2f32.to_le_bytes().to_vec())),
            ..Default::default()
        });
        let g = GraphProto { node: vec![c, node("Mul", &["x", "k"], &["y"]), node("Relu", &["y"], &["z"])], ..Default::default() };
        let g = Graph::new(&g);
        assert_eq!(g.tensor("k").unwrap().scalar().unwrap(), 2.0);
        assert_eq!(g.producer("y").unwrap().op_type, "Mul");
        assert_eq!(g.consumer("y", "Relu").unwrap().output, vec!["z"]);
        assert!(g.consumer("y", "Add").is_err());
        assert!(g.tensor("x").is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x00\x01\x02", b"not an onnx file at all", &[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f]] {
            if let Ok(m) = Model::parse(bytes.to_vec()) {
                let _ = m.graph().map(|g| g.all_graphs().len());
            }
        }
    }
}
