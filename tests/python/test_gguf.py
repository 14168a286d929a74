"""GGUF interoperability: chatai's reader and writer against the reference `gguf` package,
the Python binding's surface, and `chatai inspect`."""

import json
import math
import subprocess

import gguf
import numpy as np
import pytest

import chatai

VT = gguf.GGUFValueType


def reference_fields(reader):
    """The metadata of a gguf.GGUFReader as {key: (chatai type name, value)}, header fields left out."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = (field.types[0].name.lower(), field.contents())
    return out


def same_value(a, b):
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-7) or (math.isnan(a) and math.isnan(b))
    return a == b


def test_real_model_matches_the_reference_reader(test_model):
    ours = chatai.GGUFFile(str(test_model))
    ref = gguf.GGUFReader(test_model)
    assert ours.version == 3
    assert ours.architecture == "llama"

    fields = reference_fields(ref)
    assert ours.keys() == list(fields)
    metadata = ours.metadata
    for key, (type_name, value) in fields.items():
        assert ours.value_type(key) == type_name, key
        assert same_value(metadata[key], value), key
    assert metadata["llama.block_count"] == 30
    assert metadata["llama.embedding_length"] == 576
    assert len(metadata["tokenizer.ggml.tokens"]) == 49152

    assert len(ours.tensors) == len(ref.tensors) == 272
    for mine, theirs in zip(ours.tensors, ref.tensors):
        assert mine.name == theirs.name
        assert mine.type.upper() == theirs.tensor_type.name
        assert mine.shape == [int(d) for d in theirs.shape]
        assert mine.offset + ours.data_offset == theirs.data_offset
        assert mine.size == theirs.n_bytes
    norm = ours.tensor_data("output_norm.weight")
    ref_norm = next(t for t in ref.tensors if t.name == "output_norm.weight")
    assert norm == ref_norm.data.tobytes()


def chatai_written(path):
    w = chatai.GGUFWriter()
    w.add_string("general.architecture", "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float32("t.f32", 0.5)
    w.add_float64("t.f64", -1.25e300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    for name in ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]:
        w.add_array(f"a.{name}", [1, 2, 3], name)
    w.add_array("a.float32", [0.25, -0.5], "float32")
    w.add_array("a.float64", [1e-300], "float64")
    w.add_array("a.bool", [True, False], "bool")
    w.add_array("a.string", ["one", "", "thrée"], "string")
    w.set_alignment(64)
    w.add_tensor("f32", "f32", [4, 3], np.arange(12, dtype=np.float32).tobytes())
    w.add_tensor("f16", "f16", [5], np.arange(5, dtype=np.float16).tobytes())
    w.add_tensor("q8", "q8_0", [64, 2], bytes(range(136)))
    w.write(str(path))
    return w


def test_chatai_writes_what_the_reference_reads(tmp_path):
    path = tmp_path / "ours.gguf"
    w = chatai_written(path)
    assert path.read_bytes() == w.to_bytes()
    ref = gguf.GGUFReader(path)
    fields = reference_fields(ref)
    assert fields["t.u8"] == ("uint8", 200)
    assert fields["t.i8"] == ("int8", -100)
    assert fields["t.u16"] == ("uint16", 60000)
    assert fields["t.i16"] == ("int16", -30000)
    assert fields["t.u32"] == ("uint32", 4000000000)
    assert fields["t.i32"] == ("int32", -2000000000)
    assert fields["t.u64"] == ("uint64", 2**63 + 5)
    assert fields["t.i64"] == ("int64", -(2**62))
    assert fields["t.f32"] == ("float32", 0.5)
    assert fields["t.f64"] == ("float64", -1.25e300)
    assert fields["t.bool"] == ("bool", True)
    assert fields["t.str"] == ("string", "héllo")
    for name in ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]:
        assert ref.fields[f"a.{name}"].types == [VT.ARRAY, VT[name.upper()]]
        assert fields[f"a.{name}"][1] == [1, 2, 3]
    assert fields["a.float32"][1] == [0.25, -0.5]
    assert fields["a.float64"][1] == [1e-300]
    assert fields["a.bool"][1] == [True, False]
    assert fields["a.string"][1] == ["one", "", "thrée"]
    assert fields["general.alignment"] == ("uint32", 64)

    tensors = {t.name: t for t in ref.tensors}
    assert tensors["f32"].tensor_type == gguf.GGMLQuantizationType.F32
    assert [int(d) for d in tensors["f32"].shape] == [4, 3]
    assert np.array_equal(tensors["f32"].data.reshape(-1), np.arange(12, dtype=np.float32))
    assert np.array_equal(tensors["f16"].data.reshape(-1), np.arange(5, dtype=np.float16))
    assert tensors["q8"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["q8"].data.tobytes() == bytes(range(136))
    for t in ref.tensors:
        assert t.data_offset % 64 == 0


def test_reference_writes_what_chatai_reads(tmp_path):
    path = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(64)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_uint8("t.u8", 7)
    w.add_int16("t.i16", -7)
    w.add_uint64("t.u64", 2**40)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 0.125)
    w.add_bool("t.bool", False)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "ç"])
    w.add_token_scores([0.0, -1.0, -2.0])
    w.add_token_types([1, 1, 3])
    w.add_array("t.nums", [1, 2, 3])
    w.add_tensor("w", np.arange(64 * 2, dtype=np.float32).reshape(2, 64))
    w.add_tensor("h", np.ones(3, dtype=np.float16))
    q8 = np.frombuffer(bytes(range(68)), dtype=np.uint8).reshape(2, 34)
    w.add_tensor("q", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    f = chatai.GGUFFile(str(path))
    m = f.metadata
    assert f.architecture == "llama"
    assert m["llama.block_count"] == 2
    assert m["llama.context_length"] == 128
    assert m["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert f.value_type("llama.attention.layer_norm_rms_epsilon") == "float32"
    assert (m["t.u8"], f.value_type("t.u8")) == (7, "uint8")
    assert (m["t.i16"], f.value_type("t.i16")) == (-7, "int16")
    assert m["t.u64"] == 2**40 and m["t.i64"] == -(2**40)
    assert m["t.f64"] == 0.125 and m["t.bool"] is False
    assert m["tokenizer.ggml.tokens"] == ["a", "b", "ç"]
    assert m["tokenizer.ggml.scores"] == [0.0, -1.0, -2.0]
    assert m["tokenizer.ggml.token_type"] == [1, 1, 3]
    assert m["t.nums"] == [1, 2, 3]
    assert f.get("no.such.key") is None

    tensors = {t.name: t for t in f.tensors}
    assert tensors["w"].type == "f32" and tensors["w"].shape == [64, 2]
    assert tensors["h"].type == "f16" and tensors["h"].shape == [3]
    assert tensors["q"].type == "q8_0" and tensors["q"].shape == [32, 2]
    assert f.tensor_data("w") == np.arange(128, dtype=np.float32).tobytes()
    assert f.tensor_data("q") == bytes(range(68))


def test_errors_raise_chatai_error_with_code(tmp_path):
    with pytest.raises(chatai.Error) as missing:
        chatai.GGUFFile(str(tmp_path / "missing.gguf"))
    assert missing.value.code == "not_found"

    path = tmp_path / "bad.gguf"
    good = chatai_written(tmp_path / "good.gguf").to_bytes()
    data = bytearray(good)
    data[4:8] = (1).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(chatai.Error) as old:
        chatai.GGUFFile(str(path))
    assert old.value.code == "unsupported"
    assert "offset 4: GGUF version 1 is not supported" in str(old.value)

    path.write_bytes(good[:100])
    with pytest.raises(chatai.Error) as cut:
        chatai.GGUFFile(str(path))
    assert cut.value.code == "parse_error"
    assert "offset " in str(cut.value)

    w = chatai.GGUFWriter()
    w.add_uint32("k", 1)
    with pytest.raises(chatai.Error, match="duplicate metadata key 'k'"):
        w.add_uint32("k", 2)
    with pytest.raises(chatai.Error, match="unknown tensor type"):
        w.add_tensor("t", "q4_2", [32], bytes(18))
    with pytest.raises(chatai.Error, match="needs 18 bytes"):
        w.add_tensor("t", "q4_0", [32], bytes(17))
    with pytest.raises(chatai.Error, match="unknown array element type"):
        w.add_array("a", [1], "int128")


def run_cli(build_dir, *args):
    return subprocess.run([str(build_dir / "bin" / "chatai"), *args], capture_output=True, text=True, timeout=60)


def test_inspect_json(build_dir, test_model):
    proc = run_cli(build_dir, "inspect", "--json", str(test_model))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["architecture"] == "llama"
    hp = doc["hyperparameters"]
    assert hp["block_count"] == 30
    assert hp["embedding_length"] == 576
    assert hp["context_length"] == 8192
    assert hp["attention.head_count"] == 9
    assert hp["attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert isinstance(hp["rope.freq_base"], float) and hp["rope.freq_base"] == 100000.0
    assert doc["tokenizer"]["model"] == "gpt2"
    assert doc["tokenizer"]["tokens"] == {"type": "string", "length": 49152}
    assert "<|im_start|>" in doc["chat_template"]
    assert len(doc["tensors"]) == 272
    assert doc["total"]["bytes"] == sum(t["bytes"] for t in doc["tensors"])
    embd = next(t for t in doc["tensors"] if t["name"] == "token_embd.weight")
    assert embd["shape"] == [576, 49152]


def test_inspect_text_and_errors(build_dir, test_model, tmp_path):
    proc = run_cli(build_dir, "inspect", str(test_model))
    assert proc.returncode == 0, proc.stderr
    assert "architecture:  llama" in proc.stdout
    assert "block_count" in proc.stdout and "49152 tokens" in proc.stdout
    assert "total: 272 tensors" in proc.stdout

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x04\x00\x00\x00" + bytes(16))
    proc = run_cli(build_dir, "inspect", str(bad))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("chatai inspect: ") and "offset 4: GGUF version 4" in proc.stderr
