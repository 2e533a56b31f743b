//! Kokoro weights from the int8 ONNX export (`kokoro-v1.0.int8.onnx`).
//!
//! The file is read by voice-onnx (the reader every model crate shares); this module keeps
//! Kokoro's own mapping from graph names to parameter names. The export was quantized dynamically by
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
pub use voice_onnx::HostTensor;
use voice_onnx::{dequantize, dtype, input, Graph, Model};

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

/// All Kokoro parameters from the ONNX file, by PyTorch name.
pub fn load(path: &Path) -> Result<HashMap<String, HostTensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(bytes).with_context(|| format!("parsing {} as the Kokoro ONNX export", path.display()))
}

/// [`load`] from bytes in memory. Initializer data stays in this one buffer (prost slices it
/// without copying) until each parameter is dequantized into its own.
pub fn parse(bytes: impl Into<bytes::Bytes>) -> Result<HashMap<String, HostTensor>> {
    let model = Model::parse(bytes)?;
    let graph = model.graph()?;
    // Every initializer is checked once up front, so a corrupt file fails before any work.
    for name in graph.tensor_names() {
        graph.tensor(name)?;
    }
    params(&graph)
}

fn params(graph: &Graph) -> Result<HashMap<String, HostTensor>> {
    let get = |name: &str| graph.tensor(name);
    // The scale of a quantized weight `X_quantized` is `X_scale` (scales were not deduplicated).
    let scale_of = |q: &str| {
        let base = q.strip_suffix("_quantized").ok_or_else(|| anyhow!("`{q}` is not a quantized initializer"))?;
        get(&format!("{base}_scale"))
    };
    let mut params: HashMap<String, HostTensor> = HashMap::new();
    let mut done: std::collections::HashSet<&str> = Default::default();
    for node in graph.nodes() {
        match node.op_type.as_str() {
            "MatMulInteger" => {
                let w = input(node, 1)?;
                if !done.insert(w) {
                    continue; // ALBERT's shared layer, applied 12 times
                }
                let weight = dequantize(&get(w)?, &scale_of(w)?, &get(input(node, 3)?)?, 1)?.t()?;
                params.insert(format!("{}.weight", module_path(&node.name)?), weight);
            }
            "ConvInteger" => {
                let w = input(node, 1)?;
                if !done.insert(w) {
                    continue;
                }
                let weight = dequantize(&get(w)?, &scale_of(w)?, &get(input(node, 3)?)?, 0)?;
                params.insert(format!("{}.weight", module_path(&node.name)?), weight);
            }
            "Conv" | "ConvTranspose" => {
                let path = module_path(&node.name)?;
                if path.contains("istft") {
                    continue; // the exporter's inverse-STFT basis: computed, not learned
                }
                let w = get(input(node, 1)?)?;
                params.insert(format!("{path}.weight"), HostTensor::new(w.dims(), w.to_f32()?)?);
            }
            "MatMul" => {
                // Float products: attention scores (no initializer) and the source module's
                // 9 -> 1 harmonic merge, the only float linear layer.
                let Ok(w) = input(node, 1) else { continue };
                if !graph.has_tensor(w) {
                    continue;
                }
                let t = HostTensor::from_floats(&get(w)?)?.t()?;
                params.insert(format!("{}.weight", module_path(&node.name)?), t);
            }
            "Gather" => {
                let w = input(node, 0)?;
                let Ok(q) = get(w) else { continue };
                if !matches!(q.dtype, dtype::INT8 | dtype::UINT8) {
                    continue;
                }
                // The DequantizeLinear after the gather holds this table's zero point.
                let out = voice_onnx::output(node, 0)?;
                let dq = graph.consumer(out, "DequantizeLinear").with_context(|| format!("quantized embedding `{w}`"))?;
                let table = dequantize(&q, &get(input(dq, 1)?)?, &get(input(dq, 2)?)?, 0)?;
                let name = torch_name(w.strip_suffix("_quantized").unwrap_or(w)).ok_or_else(|| anyhow!("embedding `{w}` has no PyTorch name"))?;
                params.insert(name, table);
            }
            "DynamicQuantizeLSTM" => {
                let path = module_path(&node.name)?;
                let (w, r, b) = (get(input(node, 1)?)?, get(input(node, 2)?)?, get(input(node, 3)?)?);
                let w = dequantize(&w, &get(input(node, 8)?)?, &get(input(node, 9)?)?, 0)?;
                let r = dequantize(&r, &get(input(node, 10)?)?, &get(input(node, 11)?)?, 0)?;
                let [dirs, in_dim, four_h] = w.shape[..] else { bail!("LSTM `{path}`: W shape {:?}", w.shape) };
                let hidden = four_h / 4;
                if dirs != 2 || r.shape != [2, hidden, four_h] || b.dims() != [2, 2 * four_h] {
                    bail!("LSTM `{path}`: unexpected shapes W {:?} R {:?} B {:?}", w.shape, r.shape, b.dims());
                }
                let bv = b.to_f32()?;
                for (d, suffix) in [(0, ""), (1, "_reverse")] {
                    // W is (in, 4H) per direction here; PyTorch keeps (4H, in).
                    let wd = HostTensor::new(vec![in_dim, four_h], w.data[d * in_dim * four_h..(d + 1) * in_dim * four_h].to_vec())?.t()?;
                    let rd = HostTensor::new(vec![hidden, four_h], r.data[d * hidden * four_h..(d + 1) * hidden * four_h].to_vec())?.t()?;
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
    for t in &graph.proto.initializer {
        if t.data_type != dtype::FLOAT || t.name.ends_with("_scale") {
            continue;
        }
        if let Some(name) = torch_name(&t.name) {
            if let std::collections::hash_map::Entry::Vacant(e) = params.entry(name) {
                e.insert(HostTensor::from_floats(&get(&t.name)?)?);
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
