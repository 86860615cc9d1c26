#!/usr/bin/env python3
"""Write tiny random-weight GGUFs of the BERT-family embedding architectures Gantry serves.

Each file has the tensors and metadata llama.cpp's converter writes for that architecture
(convert_hf_to_gguf.py's BertModel / NomicBertModel at the anchor commit; tensor names from
src/llama-arch.cpp), with a width of 32 and the 30522-token WordPiece vocabulary copied from
ggml-vocab-bert-bge.gguf (tokenizer.ggml.model = "bert", token_type_count 2):

  bert.gguf        bert (bge, e5, MiniLM): learned absolute position embeddings, token type
                   embeddings, LayerNorm with bias after the embeddings and after attention and
                   the FFN (post-norm), Q/K/V/output and FFN biases, GELU FFN; CLS pooling.
  nomic-bert.gguf  nomic-bert (nomic-embed-text): fused attn_qkv without bias, NeoX RoPE
                   (base 1000) instead of position embeddings, SwiGLU FFN without biases, the
                   same post-norms and token types; mean pooling.
  nomic-bert-f16.gguf  the same weights with every matrix in F16 (as an F16 download): llama.cpp
                   then rounds the activations of each matmul to fp16 too.

token_embd is F16 (keeps each file near 2.3 MB), everything else F32. LayerNorm weights are
drawn near 1 and biases near 0 (not exactly) so that a norm or bias applied to the wrong tensor
shows. Matrices are N(0, 1/fan_in). Deterministic (fixed seeds).

usage: PYTHONPATH=../peers/llama.cpp/gguf-py /usr/bin/python3 make_bert.py VOCAB_DIR OUT_DIR
"""
from __future__ import annotations

import math
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_bert.py: the 'gguf' package is required (llama.cpp's gguf-py on PYTHONPATH)")

N_EMBD, N_LAYER, N_HEAD, N_FF, N_CTX = 32, 2, 4, 64, 512


def copy_tokenizer_kv(writer, vocab_path):
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
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
    return n_vocab


class Model:
    def __init__(self, path, arch, seed, matrix_dtype=np.float32):
        self.w = gguf.GGUFWriter(path, arch)
        self.rng = np.random.default_rng(seed)
        self.tensors = []
        self.matrix_dtype = matrix_dtype

    def mat(self, name, rows, cols, dtype=None, std=None):
        std = 1.0 / math.sqrt(cols) if std is None else std
        dtype = self.matrix_dtype if dtype is None else dtype
        t = (self.rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(dtype)
        self.tensors.append((name, t))

    def norm(self, name, n):
        w = 1.0 + 0.2 * self.rng.standard_normal(n, dtype=np.float32)
        self.tensors.append((name + ".weight", w.astype(np.float32)))
        b = 0.1 * self.rng.standard_normal(n, dtype=np.float32)
        self.tensors.append((name + ".bias", b.astype(np.float32)))

    def bias(self, name, n):
        self.tensors.append((name, (0.1 * self.rng.standard_normal(n, dtype=np.float32))))

    def write(self):
        for name, t in self.tensors:
            self.w.add_tensor(name, t)
        self.w.write_header_to_file()
        self.w.write_kv_data_to_file()
        self.w.write_tensors_to_file()
        self.w.close()


def common(m, name, vocab_dir, pooling):
    w = m.w
    w.add_name(name)
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    w.add_pooling_type(pooling)
    w.add_file_type(1)
    n_vocab = copy_tokenizer_kv(w, vocab_dir + "/ggml-vocab-bert-bge.gguf")
    m.mat("token_embd.weight", n_vocab, N_EMBD, np.float16, std=1.0)
    m.mat("token_types.weight", 2, N_EMBD, np.float32, std=0.5)


def bert(vocab_dir, out):
    m = Model(out, "bert", 21)
    common(m, "tiny-bert", vocab_dir, gguf.PoolingType.CLS)
    m.mat("position_embd.weight", N_CTX, N_EMBD, std=0.5)
    m.norm("token_embd_norm", N_EMBD)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        for t in ("attn_q", "attn_k", "attn_v"):
            m.mat(p + t + ".weight", N_EMBD, N_EMBD)
            m.bias(p + t + ".bias", N_EMBD)
        m.mat(p + "attn_output.weight", N_EMBD, N_EMBD)
        m.bias(p + "attn_output.bias", N_EMBD)
        m.norm(p + "attn_output_norm", N_EMBD)
        m.mat(p + "ffn_up.weight", N_FF, N_EMBD)
        m.bias(p + "ffn_up.bias", N_FF)
        m.mat(p + "ffn_down.weight", N_EMBD, N_FF)
        m.bias(p + "ffn_down.bias", N_EMBD)
        m.norm(p + "layer_output_norm", N_EMBD)
    m.write()


def nomic_bert(vocab_dir, out, matrix_dtype=np.float32):
    m = Model(out, "nomic-bert", 22, matrix_dtype)
    common(m, "tiny-nomic-bert", vocab_dir, gguf.PoolingType.MEAN)
    m.w.add_rope_freq_base(1000.0)
    m.norm("token_embd_norm", N_EMBD)
    for i in range(N_LAYER):
        p = f"blk.{i}."
        m.mat(p + "attn_qkv.weight", 3 * N_EMBD, N_EMBD)
        m.mat(p + "attn_output.weight", N_EMBD, N_EMBD)
        m.norm(p + "attn_output_norm", N_EMBD)
        m.mat(p + "ffn_up.weight", N_FF, N_EMBD)
        m.mat(p + "ffn_gate.weight", N_FF, N_EMBD)
        m.mat(p + "ffn_down.weight", N_EMBD, N_FF)
        m.norm(p + "layer_output_norm", N_EMBD)
    m.write()


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    vocab_dir, out_dir = sys.argv[1], sys.argv[2]
    bert(vocab_dir, out_dir + "/bert.gguf")
    nomic_bert(vocab_dir, out_dir + "/nomic-bert.gguf")
    nomic_bert(vocab_dir, out_dir + "/nomic-bert-f16.gguf", np.float16)


if __name__ == "__main__":
    main()
