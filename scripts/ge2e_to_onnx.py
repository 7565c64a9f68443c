"""Writes resemblyzer's GE2E speaker encoder (its wheel's pretrained.pt) as an ONNX graph of the same network.

Run by scripts/speaker-encoder, which fetches and checks the wheel. The network is resemblyzer's VoiceEncoder:
a 3-layer LSTM (40 mel channels in, 256 hidden) whose last layer's final state goes through Linear(256, 256),
ReLU and L2 normalisation. Only `model_state` is kept (the checkpoint's optimiser state is two thirds of its 17 MB).
The weights are stored as float16 (2.9 MB instead of 5.7: the file travels in the repository and the images) and
cast to float32 inside the graph (onnxruntime folds the casts once, at load), so the network computes in float32.
Usage: python ge2e_to_onnx.py PRETRAINED_PT OUT_ONNX
"""

import sys

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

HIDDEN, LAYERS, MELS = 256, 3, 40


def onnx_gates(blocks: np.ndarray) -> np.ndarray:
    """torch stacks an LSTM's gates as input, forget, cell, output; ONNX as input, output, forget, cell."""
    i, f, g, o = np.split(blocks, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def half(name: str, array: np.ndarray) -> tuple[onnx.TensorProto, onnx.NodeProto]:
    """A weight stored as float16 (`name`_f16) and the node that makes it the float32 `name` the graph uses."""
    stored = numpy_helper.from_array(array.astype(np.float16), f"{name}_f16")
    return stored, helper.make_node("Cast", [f"{name}_f16"], [name], to=TensorProto.FLOAT)


def graph(state: dict[str, np.ndarray]) -> onnx.ModelProto:
    weights, nodes = [], [helper.make_node("Transpose", ["mels"], ["x0"], perm=[1, 0, 2])]  # [frames, batch, mels]
    weights += [numpy_helper.from_array(np.array([0], np.int64), "axis0"),
                numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    for layer in range(LAYERS):
        w = onnx_gates(state[f"lstm.weight_ih_l{layer}"])[None]
        r = onnx_gates(state[f"lstm.weight_hh_l{layer}"])[None]
        b = np.concatenate([onnx_gates(state[f"lstm.bias_ih_l{layer}"]), onnx_gates(state[f"lstm.bias_hh_l{layer}"])])
        for name, array in (("W", w), ("R", r), ("B", b[None])):
            stored, cast = half(f"{name}{layer}", array)
            weights.append(stored)
            nodes.append(cast)
        # Y: [frames, 1 direction, batch, hidden]; Y_h: [1, batch, hidden], each row's state at its own length
        nodes.append(helper.make_node("LSTM", [f"x{layer}", f"W{layer}", f"R{layer}", f"B{layer}", "lengths"],
                                      [f"y{layer}", f"h{layer}"], hidden_size=HIDDEN))
        nodes.append(helper.make_node("Squeeze", [f"y{layer}", "axis1"], [f"x{layer + 1}"]))
    for name, array in (("linear_w", state["linear.weight"].T.copy()), ("linear_b", state["linear.bias"])):
        stored, cast = half(name, array)
        weights.append(stored)
        nodes.append(cast)
    nodes += [helper.make_node("Squeeze", [f"h{LAYERS - 1}", "axis0"], ["last"]),
              helper.make_node("MatMul", ["last", "linear_w"], ["projected"]),
              helper.make_node("Add", ["projected", "linear_b"], ["biased"]),
              helper.make_node("Relu", ["biased"], ["raw"]),
              helper.make_node("ReduceL2", ["raw"], ["norm"], axes=[1], keepdims=1),
              helper.make_node("Div", ["raw", "norm"], ["embeddings"])]
    inputs = [helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["batch", "frames", MELS]),
              helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"])]
    outputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", HIDDEN])]
    model = helper.make_model(helper.make_graph(nodes, "ge2e_speaker_encoder", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="scripts/speaker-encoder")
    model.ir_version = 8  # readable by every onnxruntime >= 1.17, the project's lower bound
    onnx.checker.check_model(model)
    return model


def torch_embeddings(state: dict[str, torch.Tensor], mels: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """resemblyzer's VoiceEncoder.forward, computed by torch, one row at a time at its own length."""
    lstm, linear = torch.nn.LSTM(MELS, HIDDEN, LAYERS, batch_first=True), torch.nn.Linear(HIDDEN, HIDDEN)
    lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in state.items() if k.startswith("lstm.")})
    linear.load_state_dict({"weight": state["linear.weight"], "bias": state["linear.bias"]})
    rows = []
    with torch.no_grad():
        for row, length in enumerate(lengths):
            _, (hidden, _) = lstm(torch.from_numpy(mels[row : row + 1, :length]))
            reference = torch.relu(linear(hidden[-1]))[0]
            rows.append((reference / reference.norm()).numpy())
    return np.stack(rows)


def check(state: dict[str, torch.Tensor], target: str) -> None:
    """The ONNX graph is the network with its float16-rounded weights, computed by torch (to 1e-5), on batches of any
    lengths; against the float32 weights its embeddings stay alike (cosine printed; at least 0.999)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(target, providers=["CPUExecutionProvider"])
    mels = np.abs(np.random.default_rng(0).normal(0, 3, (4, 160, MELS))).astype(np.float32)
    lengths = np.array([160, 80, 40, 7], np.int32)
    (ours,) = session.run(["embeddings"], {"mels": mels, "lengths": lengths})
    rounded = {name: tensor.half().float() for name, tensor in state.items()}
    assert np.abs(ours - torch_embeddings(rounded, mels, lengths)).max() < 1e-5, "the ONNX graph differs from torch"
    cosine = (ours * torch_embeddings(state, mels, lengths)).sum(axis=1)
    print(f"float16 weights against float32: cosine of the embeddings {cosine.min():.6f} (lowest of {len(cosine)})")
    assert cosine.min() > 0.999, "float16 weights moved the embeddings"


def main(source: str, target: str) -> None:
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    onnx.save(graph({name: tensor.numpy() for name, tensor in checkpoint["model_state"].items()}), target)
    check(checkpoint["model_state"], target)


if __name__ == "__main__":
    main(*sys.argv[1:])
