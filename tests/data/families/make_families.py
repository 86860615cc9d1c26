#!/usr/bin/env python3
"""Write tiny random-weight GGUFs of the decoder families Gantry runs besides plain Llama/Qwen2.

Each file has the tensors and metadata llama.cpp's converter writes for that family
(conversion/{gemma,phi,llama}.py at the anchor commit), with a width of 16 so that the files
stay near 3 MB with a real 32k vocabulary copied from a vocab-only GGUF:

  llama32-tied.gguf  llama, no output.weight (the head reuses token_embd, as Llama 3.2 1B/3B),
                     Llama 3 rope_freqs, GQA, and `llama.attention.sliding_window` = 8, a key
                     llama.cpp does not read for this architecture (Mistral-style files).
  gemma2.gguf        gemma2: sqrt(n_embd)-scaled embeddings, post-attention/post-FFN norms,
                     GELU-tanh gated FFN, attention and final logit soft-capping, head_dim != n_embd /
                     n_head, sliding window 6 on every other layer; Gemma's chat template.
  gemma3.gguf        gemma3: as gemma2 without soft-capping, plus Q/K RMS norms, window 6 with
                     pattern 2, rope base 1e6 (linear scaling x8) on global layers, 1e4 on local.
  phi3.gguf          phi3 (Phi-3/3.5/4-mini): fused attn_qkv and gate|up, partial rotary (6 of 8),
                     LongRoPE short/long factors with attn_factor, separate output.weight,
                     `phi3.attention.sliding_window` = 8 (llama.cpp disables Phi-3 SWA); the Phi-3
                     vocab with its chat template.

Norm weights are drawn near 1 (not exactly 1) so that a norm applied to the wrong tensor shows.
Matrices are N(0, 1/fan_in). Tied embeddings are N(0, 0.01): large ones would dominate the
residual stream, and a tied head then predicts the input token again and again, which would
test little; logits still lie tenths apart, far above rounding differences. Deterministic (fixed seeds).

usage: PYTHONPATH=../peers/llama.cpp/gguf-py /usr/bin/python3 make_families.py VOCAB_DIR OUT_DIR
"""
from __future__ import annotations

import math
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_families.py: the 'gguf' package is required (llama.cpp's gguf-py on PYTHONPATH)")

GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
    "{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def copy_tokenizer_kv(writer, vocab_path, chat_template=None):
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if key == "tokenizer.chat_template" and chat_template is not None:
            continue
        main_type = field.types[0]
        if main_type == gguf.GGUFValueType.ARRAY:
            sub_type = field.types[-1]
            if sub_type == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]) for i in field.data]
            else:
                value = [v.item() for i in field.data for v in field.parts[i]]
            writer.add_key_value(key, value, main_type, sub_type=sub_type)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        elif main_type == gguf.GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[field.data[0]]), main_type)
        else:
            writer.add_key_value(key, field.parts[field.data[0]][0].item(), main_type)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    return n_vocab


class Model:
    def __init__(self, path, arch, seed):
        self.w = gguf.GGUFWriter(path, arch)
        self.rng = np.random.default_rng(seed)
        self.tensors = []

    def mat(self, name, rows, cols, dtype=np.float32, std=None):
        std = 1.0 / math.sqrt(cols) if std is None else std
        t = (self.rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(dtype)
        self.tensors.append((name, t))

    def norm(self, name, n):
        t = (1.0 + 0.2 * self.rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
        self.tensors.append((name, t))

    def vec(self, name, values):
        self.tensors.append((name, np.asarray(values, dtype=np.float32)))

    def write(self):
        for name, t in self.tensors:
            self.w.add_tensor(name, t)
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()


def common_kv(w, name, n_ctx, n_embd, n_layer, n_ff, n_head, n_head_kv, eps):
    w.add_name(name)
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(eps)
    w.add_file_type(0)


def llama32_tied(vocab_dir, out):
    n_embd, n_layer, n_head, n_head_kv, n_ff, hd = 16, 2, 4, 2, 48, 4
    m = Model(out, "llama", 11)
    common_kv(m.w, "tiny-llama32-tied", 2048, n_embd, n_layer, n_ff, n_head, n_head_kv, 1e-5)
    m.w.add_rope_dimension_count(hd)
    m.w.add_rope_freq_base(500000.0)
    m.w.add_sliding_window(8)
    n_vocab = copy_tokenizer_kv(m.w, f"{vocab_dir}/ggml-vocab-llama-spm.gguf")
    m.mat("token_embd.weight", n_vocab, n_embd, std=0.1)
    # Llama 3.1's frequency factors (convert_hf_to_gguf's formula, factor 8, low/high 1/4).
    freqs = 1.0 / (500000.0 ** (np.arange(0, hd, 2, dtype=np.float32) / hd))
    factors = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < 8192 / 4:
            factors.append(1.0)
        elif wavelen > 8192 / 1:
            factors.append(8.0)
        else:
            smooth = (8192 / wavelen - 1) / (4 - 1)
            factors.append(1 / ((1 - smooth) / 8 + smooth))
    m.vec("rope_freqs.weight", factors)
    for i in range(n_layer):
        p = f"blk.{i}."
        m.norm(p + "attn_norm.weight", n_embd)
        m.mat(p + "attn_q.weight", n_head * hd, n_embd)
        m.mat(p + "attn_k.weight", n_head_kv * hd, n_embd)
        m.mat(p + "attn_v.weight", n_head_kv * hd, n_embd)
        m.mat(p + "attn_output.weight", n_embd, n_head * hd)
        m.norm(p + "ffn_norm.weight", n_embd)
        m.mat(p + "ffn_gate.weight", n_ff, n_embd)
        m.mat(p + "ffn_up.weight", n_ff, n_embd)
        m.mat(p + "ffn_down.weight", n_embd, n_ff)
    m.norm("output_norm.weight", n_embd)
    m.write()


def gemma(vocab_dir, out, version):
    n_embd, n_layer, n_head, n_head_kv, n_ff, hd = 16, 3, 4, 2, 48, 8
    arch = "gemma2" if version == 2 else "gemma3"
    m = Model(out, arch, 20 + version)
    common_kv(m.w, f"tiny-{arch}", 8192, n_embd, n_layer, n_ff, n_head, n_head_kv, 1e-6)
    m.w.add_key_length(hd)
    m.w.add_value_length(hd)
    m.w.add_sliding_window(6)
    if version == 2:
        m.w.add_attn_logit_softcapping(50.0)
        m.w.add_final_logit_softcapping(30.0)
    else:
        m.w.add_sliding_window_pattern(2)
        m.w.add_rope_freq_base(1000000.0)
        m.w.add_rope_freq_base_swa(10000.0)
        m.w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        m.w.add_rope_scaling_factor(8.0)
    n_vocab = copy_tokenizer_kv(m.w, f"{vocab_dir}/ggml-vocab-llama-spm.gguf", GEMMA_TEMPLATE)
    m.mat("token_embd.weight", n_vocab, n_embd, std=0.1)
    for i in range(n_layer):
        p = f"blk.{i}."
        m.norm(p + "attn_norm.weight", n_embd)
        m.mat(p + "attn_q.weight", n_head * hd, n_embd)
        m.mat(p + "attn_k.weight", n_head_kv * hd, n_embd)
        m.mat(p + "attn_v.weight", n_head_kv * hd, n_embd)
        if version == 3:
            m.norm(p + "attn_q_norm.weight", hd)
            m.norm(p + "attn_k_norm.weight", hd)
        m.mat(p + "attn_output.weight", n_embd, n_head * hd)
        m.norm(p + "post_attention_norm.weight", n_embd)
        m.norm(p + "ffn_norm.weight", n_embd)
        m.mat(p + "ffn_gate.weight", n_ff, n_embd)
        m.mat(p + "ffn_up.weight", n_ff, n_embd)
        m.mat(p + "ffn_down.weight", n_embd, n_ff)
        m.norm(p + "post_ffw_norm.weight", n_embd)
    m.norm("output_norm.weight", n_embd)
    m.write()


def phi3(vocab_dir, out):
    n_embd, n_layer, n_head, n_head_kv, n_ff = 16, 2, 2, 1, 48
    hd = n_embd // n_head
    n_rot = 6
    m = Model(out, "phi3", 31)
    common_kv(m.w, "tiny-phi3", 4096, n_embd, n_layer, n_ff, n_head, n_head_kv, 1e-5)
    m.w.add_rope_scaling_orig_ctx_len(512)
    m.w.add_rope_dimension_count(n_rot)
    m.w.add_rope_freq_base(10000.0)
    m.w.add_sliding_window(8)
    scale = 4096 / 512
    m.w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(512)))
    n_vocab = copy_tokenizer_kv(m.w, f"{vocab_dir}/ggml-vocab-phi-3.gguf")
    m.mat("token_embd.weight", n_vocab, n_embd, dtype=np.float16, std=1.0)
    m.vec("rope_factors_long.weight", [1.0, 3.5, 11.0])
    m.vec("rope_factors_short.weight", [1.0, 1.25, 2.5])
    for i in range(n_layer):
        p = f"blk.{i}."
        m.norm(p + "attn_norm.weight", n_embd)
        m.mat(p + "attn_qkv.weight", n_embd + 2 * n_head_kv * hd, n_embd)
        m.mat(p + "attn_output.weight", n_embd, n_embd)
        m.norm(p + "ffn_norm.weight", n_embd)
        m.mat(p + "ffn_up.weight", 2 * n_ff, n_embd)
        m.mat(p + "ffn_down.weight", n_embd, n_ff)
    m.norm("output_norm.weight", n_embd)
    m.mat("output.weight", n_vocab, n_embd, std=1.0)
    m.write()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    vocab_dir, out_dir = sys.argv[1], sys.argv[2]
    llama32_tied(vocab_dir, f"{out_dir}/llama32-tied.gguf")
    gemma(vocab_dir, f"{out_dir}/gemma2.gguf", 2)
    gemma(vocab_dir, f"{out_dir}/gemma3.gguf", 3)
    phi3(vocab_dir, f"{out_dir}/phi3.gguf")


if __name__ == "__main__":
    main()
