import pytest

from radpair.errors import DataError
from radpair.models import TextEncoderConfig, build_text_encoder
from radpair.text import load_tokenizer, train_wordpiece_tokenizer


def test_tokenizer_round_trip(tmp_path):
    texts = ["No pleural effusion or pneumothorax.", "Mild pulmonary edema.", "The heart is normal in size."] * 20
    tok = train_wordpiece_tokenizer(texts, tmp_path / "tok", vocab_size=200, min_frequency=1)
    again = load_tokenizer(tmp_path / "tok")
    sentence = "Mild pulmonary edema or pneumothorax."
    assert tok(sentence)["input_ids"] == again(sentence)["input_ids"]
    ids = again(sentence, add_special_tokens=False)["input_ids"]
    assert again.unk_token_id not in ids
    assert again.decode(ids) == sentence.lower()


def test_missing_tokenizer_folder_is_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "nothing")


def test_pretrained_bert_loads_from_local_folder(tmp_path, tokenizer_dir):
    """A user's CXR-BERT copy is a folder with config.json, weights and tokenizer; load it offline."""
    import torch
    from transformers import BertConfig, BertModel

    tok = load_tokenizer(tokenizer_dir)
    folder = tmp_path / "my-bert"
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    enc = build_text_encoder(TextEncoderConfig(pretrained=str(folder), pooling="cls"), vocab_size=0)
    assert enc.out_dim == 32
    reloaded = BertModel.from_pretrained(folder)
    assert torch.equal(enc.bert.embeddings.word_embeddings.weight, reloaded.embeddings.word_embeddings.weight)
    batch = load_tokenizer(folder)(["mild pulmonary edema"], return_tensors="pt")
    assert enc(batch["input_ids"], batch["attention_mask"]).shape == (1, 32)
