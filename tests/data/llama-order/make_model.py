# Writes llama-hd64-f32.gguf: a tiny random-weight Llama with F32 weights and 64-wide heads
# (32 RoPE pairs, where GCC vectorises llama.cpp's rotation), the tokenizer of the bundled
# stories260K model. Deterministic (seed 5).
#   PYTHONPATH=../peers/llama.cpp/gguf-py /usr/bin/python3 make_model.py ../shared/models/stories260K.gguf
import sys
import numpy as np
import gguf

src = gguf.GGUFReader(sys.argv[1])
w = gguf.GGUFWriter('llama-hd64-f32.gguf', 'llama')
n_embd, n_head, n_ff, n_layer, n_vocab = 128, 2, 192, 2, 512
w.add_context_length(2048)
w.add_embedding_length(n_embd)
w.add_feed_forward_length(n_ff)
w.add_block_count(n_layer)
w.add_head_count(n_head)
w.add_head_count_kv(n_head)
w.add_rope_dimension_count(n_embd // n_head)
w.add_layer_norm_rms_eps(1e-5)
for k, f in src.fields.items():
    if not k.startswith('tokenizer.'):
        continue
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        et = f.types[-1]
        vals = [f.parts[i].tobytes().decode('utf-8', 'replace') if et == gguf.GGUFValueType.STRING
                else f.parts[i][0] for i in f.data]
        if k == 'tokenizer.ggml.tokens':
            w.add_token_list(vals)
        elif k == 'tokenizer.ggml.scores':
            w.add_token_scores([float(v) for v in vals])
        elif k == 'tokenizer.ggml.token_type':
            w.add_token_types([int(v) for v in vals])
    elif t == gguf.GGUFValueType.STRING:
        if k == 'tokenizer.ggml.model':
            w.add_tokenizer_model(f.parts[-1].tobytes().decode())
    else:
        v = int(f.parts[-1][0])
        if k == 'tokenizer.ggml.bos_token_id':
            w.add_bos_token_id(v)
        elif k == 'tokenizer.ggml.eos_token_id':
            w.add_eos_token_id(v)
        elif k == 'tokenizer.ggml.unknown_token_id':
            w.add_unk_token_id(v)
rng = np.random.default_rng(5)


def m(r, c, s=0.06):
    return (rng.standard_normal((r, c)) * s).astype(np.float32)


def norm(n):
    return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)


w.add_tensor('token_embd.weight', m(n_vocab, n_embd, 0.5))
w.add_tensor('output_norm.weight', norm(n_embd))
w.add_tensor('output.weight', m(n_vocab, n_embd, 0.2))
for i in range(n_layer):
    p = f'blk.{i}.'
    w.add_tensor(p + 'attn_norm.weight', norm(n_embd))
    w.add_tensor(p + 'ffn_norm.weight', norm(n_embd))
    for n in ['attn_q', 'attn_k', 'attn_v', 'attn_output']:
        w.add_tensor(p + n + '.weight', m(n_embd, n_embd))
    w.add_tensor(p + 'ffn_gate.weight', m(n_ff, n_embd))
    w.add_tensor(p + 'ffn_up.weight', m(n_ff, n_embd))
    w.add_tensor(p + 'ffn_down.weight', m(n_embd, n_ff))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
