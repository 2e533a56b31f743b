//! The 16 kHz weights out of Silero's ONNX export (`silero_vad.onnx`, `silero_vad_16k_op15.onnx`).
//!
//! Only the parts of the protobuf that hold tensors are decoded (prost skips every other field).
//! `silero_vad.onnx` keeps both sample rates in one graph: an `If` on `sr == 16000` whose two
//! branches hold their own weights as `Constant` nodes (`If_0_then_branch__Inline_0__encoder.0.
//! reparam_conv.weight`, ...). The 16 kHz set is the one of the (sub)graph that holds the 16 kHz
//! STFT basis, shape (258, 1, 256); the 8 kHz branch's basis is (130, 1, 128). The parameters are
//! the PyTorch module's (`encoder.N.reparam_conv`, `decoder.rnn` as an `LSTMCell`, gate order
//! i, f, g, o; the graph reorders them for the ONNX `LSTM` op itself), renamed here to the names
//! of `silero_vad_16k.safetensors` so both sources share one loader.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};

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
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        #[prost(string, tag = "4")]
        pub op_type: String,
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "5")]
        pub t: Option<TensorProto>,
        #[prost(message, optional, tag = "6")]
        pub g: Option<GraphProto>,
        #[prost(message, repeated, tag = "11")]
        pub graphs: Vec<GraphProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        #[prost(int64, repeated, tag = "1")]
        pub dims: Vec<i64>,
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        #[prost(float, repeated, tag = "4")]
        pub float_data: Vec<f32>,
        #[prost(string, tag = "8")]
        pub name: String,
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
        #[prost(int32, tag = "14")]
        pub data_location: i32,
    }
}

const FLOAT: i32 = 1;
const EXTERNAL: i32 = 1;

/// ONNX parameter name (suffix) -> our (safetensors) name.
pub(crate) const ONNX_NAMES: [(&str, &str); 15] = [
    ("stft.forward_basis_buffer", "stft_conv.weight"),
    ("encoder.0.reparam_conv.weight", "conv1.weight"),
    ("encoder.0.reparam_conv.bias", "conv1.bias"),
    ("encoder.1.reparam_conv.weight", "conv2.weight"),
    ("encoder.1.reparam_conv.bias", "conv2.bias"),
    ("encoder.2.reparam_conv.weight", "conv3.weight"),
    ("encoder.2.reparam_conv.bias", "conv3.bias"),
    ("encoder.3.reparam_conv.weight", "conv4.weight"),
    ("encoder.3.reparam_conv.bias", "conv4.bias"),
    ("decoder.rnn.weight_ih", "lstm_cell.weight_ih"),
    ("decoder.rnn.weight_hh", "lstm_cell.weight_hh"),
    ("decoder.rnn.bias_ih", "lstm_cell.bias_ih"),
    ("decoder.rnn.bias_hh", "lstm_cell.bias_hh"),
    ("decoder.decoder.2.weight", "final_conv.weight"),
    ("decoder.decoder.2.bias", "final_conv.bias"),
];

/// A parameter's shape and row-major values.
pub(crate) type Param = (Vec<usize>, Vec<f32>);

/// A tensor of the graph and its name.
struct Named<'a> {
    name: &'a str,
    t: &'a proto::TensorProto,
}

/// The tensors held directly by one graph (initializers and `Constant` node values).
fn graph_tensors(g: &proto::GraphProto) -> Vec<Named<'_>> {
    let mut out: Vec<Named> = g.initializer.iter().map(|t| Named { name: &t.name, t }).collect();
    for n in &g.node {
        if n.op_type == "Constant" {
            if let (Some(name), Some(a)) = (n.output.first(), n.attribute.iter().find(|a| a.name == "value")) {
                if let Some(t) = &a.t {
                    out.push(Named { name, t });
                }
            }
        }
    }
    out
}

/// Every graph, depth first (subgraphs of `If`/`Loop`/`Scan` attributes included).
fn all_graphs<'a>(g: &'a proto::GraphProto, out: &mut Vec<&'a proto::GraphProto>) {
    out.push(g);
    for n in &g.node {
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                all_graphs(sub, out);
            }
            for sub in &a.graphs {
                all_graphs(sub, out);
            }
        }
    }
}

/// `name` is `suffix` or ends with it after a separator (`model.x`, `If_0_..._Inline_0__x`).
fn names_param(name: &str, suffix: &str) -> bool {
    name == suffix || (name.ends_with(suffix) && !name[..name.len() - suffix.len()].ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn dims(t: &proto::TensorProto) -> Result<Vec<usize>> {
    t.dims.iter().map(|&d| usize::try_from(d).map_err(|_| anyhow!("tensor `{}` has a negative dimension {d}", t.name))).collect()
}

fn values(name: &str, t: &proto::TensorProto) -> Result<Param> {
    if t.data_location == EXTERNAL {
        bail!("tensor `{name}` is stored outside the ONNX file (external data is not supported)");
    }
    if t.data_type != FLOAT {
        bail!("tensor `{name}` has ONNX element type {}, expected float32 (1)", t.data_type);
    }
    let shape = dims(t)?;
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow!("tensor `{name}`: shape {shape:?} overflows"))?;
    let data = if !t.raw_data.is_empty() {
        if t.raw_data.len() != n * 4 {
            bail!("tensor `{name}`: shape {shape:?} needs {} bytes of float32, the file has {}", n * 4, t.raw_data.len());
        }
        t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    } else {
        if t.float_data.len() != n {
            bail!("tensor `{name}`: shape {shape:?} needs {n} values, the file has {}", t.float_data.len());
        }
        t.float_data.clone()
    };
    Ok((shape, data))
}

/// The 16 kHz parameters, under the safetensors names, with the shapes the file gives (checked
/// against the model's by the caller).
pub(crate) fn parse(bytes: &[u8], expected: &HashMap<&str, Vec<usize>>) -> Result<HashMap<String, Param>> {
    let model = <proto::ModelProto as prost::Message>::decode(bytes).map_err(|e| anyhow!("not a valid ONNX protobuf: {e}"))?;
    let graph = model.graph.as_ref().ok_or_else(|| anyhow!("the ONNX file has no graph"))?;
    let mut graphs = Vec::new();
    all_graphs(graph, &mut graphs);
    let basis = ONNX_NAMES[0].0;
    let want_basis: Vec<i64> = expected["stft_conv.weight"].iter().map(|&d| d as i64).collect();
    let g = graphs.iter().find(|g| graph_tensors(g).iter().any(|n| names_param(n.name, basis) && n.t.dims == want_basis)).ok_or_else(|| {
        anyhow!("no graph of the ONNX file holds a 16 kHz STFT basis `{basis}` of shape {want_basis:?}: not a Silero VAD v5/v6 16 kHz model")
    })?;
    let tensors = graph_tensors(g);
    let mut out = HashMap::new();
    for (onnx_name, ours) in ONNX_NAMES {
        let candidates: Vec<&Named> = tensors.iter().filter(|n| names_param(n.name, onnx_name)).collect();
        let want: Vec<i64> = expected[ours].iter().map(|&d| d as i64).collect();
        let chosen: &Named = match candidates.as_slice() {
            [] => bail!("the ONNX graph has no tensor `{onnx_name}` (for `{ours}`)"),
            [one] => one,
            many => {
                let fitting: Vec<&Named> = many.iter().copied().filter(|n| n.t.dims == want).collect();
                match fitting.as_slice() {
                    [one] => one,
                    _ => bail!("the ONNX graph has {} tensors named like `{onnx_name}`; cannot tell which is the 16 kHz one", many.len()),
                }
            }
        };
        out.insert(ours.to_string(), values(chosen.name, chosen.t)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_match_on_a_separator() {
        assert!(names_param("encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(names_param("model.encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(names_param("If_0_then_branch__Inline_0__encoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(!names_param("xencoder.0.reparam_conv.weight", "encoder.0.reparam_conv.weight"));
        assert!(!names_param("encoder.0.reparam_conv.weight2", "encoder.0.reparam_conv.weight"));
    }
}
