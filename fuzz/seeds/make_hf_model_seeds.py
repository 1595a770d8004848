#!/usr/bin/env python3
"""Writes the hf_model fuzz target's seeds: one byte choosing backend and task, a
config.json, a NUL, then a model.safetensors with every tensor the architecture needs,
in the fixtures' tensor layouts at tiny widths (8 wide, one layer, 16 tokens) so that
each seed is a few KB and loads. No dependencies beyond Python."""
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_model")
H, I, V, HEADS = 8, 16, 16, 2


def safetensors(tensors, dtype="F32"):
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, data = {}, b""
    for i, (name, shape) in enumerate(sorted(tensors.items())):
        n = 1
        for d in shape:
            n *= d
        if dtype == "F32":
            raw = b"".join(struct.pack("<f", ((i * 7 + k * 13) % 17 - 8) / 64) for k in range(n))
        else:
            # bf16/f16 of small values: the top two bytes of an f32 for bf16; f16 0x2c00 (1/16) otherwise.
            raw = b"".join(
                (struct.pack("<f", ((i + k) % 9 - 4) / 32)[2:] if dtype == "BF16" else b"\x00\x2c")
                for k in range(n)
            )
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def encoder(prefix, positions, types):
    t = {
        f"{prefix}embeddings.word_embeddings.weight": [V, H],
        f"{prefix}embeddings.position_embeddings.weight": [positions, H],
        f"{prefix}embeddings.token_type_embeddings.weight": [types, H],
        f"{prefix}embeddings.LayerNorm.weight": [H],
        f"{prefix}embeddings.LayerNorm.bias": [H],
    }
    layer = f"{prefix}encoder.layer.0."
    for p in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
        t[f"{layer}{p}.weight"] = [H, H]
        t[f"{layer}{p}.bias"] = [H]
    for p in ["attention.output.LayerNorm", "output.LayerNorm"]:
        t[f"{layer}{p}.weight"] = [H]
        t[f"{layer}{p}.bias"] = [H]
    t[f"{layer}intermediate.dense.weight"] = [I, H]
    t[f"{layer}intermediate.dense.bias"] = [I]
    t[f"{layer}output.dense.weight"] = [H, I]
    t[f"{layer}output.dense.bias"] = [H]
    return t


def encoder_config(model_type, arch, positions, types, pad, extra=None):
    c = {
        "architectures": [arch], "model_type": model_type, "hidden_act": "gelu",
        "hidden_size": H, "intermediate_size": I, "layer_norm_eps": 1e-12,
        "max_position_embeddings": positions, "num_attention_heads": HEADS,
        "num_hidden_layers": 1, "pad_token_id": pad, "type_vocab_size": types, "vocab_size": V,
    }
    c.update(extra or {})
    return c


def decoder(qwen3, tied, bias=True):
    hd = H // HEADS
    t = {"model.embed_tokens.weight": [V, H], "model.norm.weight": [H]}
    if not tied:
        t["lm_head.weight"] = [V, H]
    L = "model.layers.0."
    t[f"{L}input_layernorm.weight"] = [H]
    t[f"{L}post_attention_layernorm.weight"] = [H]
    t[f"{L}self_attn.q_proj.weight"] = [HEADS * hd, H]
    t[f"{L}self_attn.k_proj.weight"] = [hd, H]
    t[f"{L}self_attn.v_proj.weight"] = [hd, H]
    t[f"{L}self_attn.o_proj.weight"] = [H, HEADS * hd]
    if bias:
        t[f"{L}self_attn.q_proj.bias"] = [HEADS * hd]
        t[f"{L}self_attn.k_proj.bias"] = [hd]
        t[f"{L}self_attn.v_proj.bias"] = [hd]
    if qwen3:
        t[f"{L}self_attn.q_norm.weight"] = [hd]
        t[f"{L}self_attn.k_norm.weight"] = [hd]
    t[f"{L}mlp.gate_proj.weight"] = [I, H]
    t[f"{L}mlp.up_proj.weight"] = [I, H]
    t[f"{L}mlp.down_proj.weight"] = [H, I]
    return t


def decoder_config(qwen3, tied):
    c = {
        "architectures": ["Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM"],
        "model_type": "qwen3" if qwen3 else "qwen2", "hidden_act": "silu", "hidden_size": H,
        "intermediate_size": I, "max_position_embeddings": 64, "num_attention_heads": HEADS,
        "num_hidden_layers": 1, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": tied, "vocab_size": V,
    }
    if qwen3:
        c["head_dim"] = H // HEADS
        c["attention_bias"] = False
    return c


# The first byte is taken modulo 4: 0 burn-bert embed, 1 burn-bert rerank,
# 2 candle-qwen2 generate, 3 burn-qwen2 generate.
seeds = {
    "bert-embed": (0, encoder_config("bert", "BertModel", 16, 2, 0), encoder("", 16, 2), "F32"),
    "roberta-embed": (0, encoder_config("roberta", "RobertaModel", 18, 1, 1), encoder("", 18, 1), "F32"),
    "bert-rerank": (
        1, encoder_config("bert", "BertForSequenceClassification", 16, 2, 0, {"id2label": {"0": "L"}}),
        {**encoder("bert.", 16, 2), "bert.pooler.dense.weight": [H, H], "bert.pooler.dense.bias": [H],
         "classifier.weight": [1, H], "classifier.bias": [1]}, "F32"),
    "xlm-roberta-rerank": (
        1, encoder_config("xlm-roberta", "XLMRobertaForSequenceClassification", 18, 1, 1, {"id2label": {"0": "L"}}),
        {**encoder("roberta.", 18, 1), "classifier.dense.weight": [H, H], "classifier.dense.bias": [H],
         "classifier.out_proj.weight": [1, H], "classifier.out_proj.bias": [1]}, "F32"),
    "qwen2-candle": (2, decoder_config(False, False), decoder(False, False), "F32"),
    "qwen3-candle-bf16": (2, decoder_config(True, True), decoder(True, True, bias=False), "BF16"),
    "qwen2-burn-f16": (3, decoder_config(False, True), decoder(False, True), "F16"),
    "qwen3-burn": (3, decoder_config(True, False), decoder(True, False, bias=False), "F32"),
}
os.makedirs(OUT, exist_ok=True)
for name, (which, config, tensors, dtype) in seeds.items():
    body = bytes([which]) + json.dumps(config).encode() + b"\0" + safetensors(tensors, dtype)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(body)
    print(f"{name}: {len(body)} bytes")
