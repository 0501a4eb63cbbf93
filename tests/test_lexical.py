from rag.lexical import BM25, bigrams, glossary_matches, tokenize


def equivalents(text: str) -> set[str]:
    return {o for _, others in glossary_matches(text) for o in others}


def test_english_terms_in_chinese_text_match():
    toks = tokenize("介绍 Batch Normalization 的意义")
    assert "batch" in toks and "normalization" in toks
    bm = BM25.from_texts(["Dropout 只在训练时使用", "学习率太大会震荡", "GAN 由生成器和判别器组成"])
    hits = bm.search("测试时要用 dropout 吗")
    assert hits[0].row == 0


def test_abbreviation_expansion():
    assert "batch normalization" in equivalents("BN 有什么用")
    assert "批归一化" in equivalents("what does batchnorm do")
    # "bn" inside a longer word is not the abbreviation
    assert "batch normalization" not in equivalents("abnormal values")
    bm = BM25.from_texts(["Batch Normalization 把输出归一化", "学习率太大会震荡"])
    assert bm.search("BN 的作用")[0].row == 0


def test_coverage_separates_covered_from_unknown_questions():
    bm = BM25.from_texts(["梯度消失是因为激活函数饱和", "学习率太大会导致损失震荡", "池化层降低特征图尺寸"])
    covered = bm.search("梯度消失的原因")[0].coverage
    unknown = bm.search("红烧肉怎么做才好吃")
    assert covered > 0.4
    assert not unknown or unknown[0].coverage < 0.2


def test_bigrams_keep_latin_words_whole():
    assert bigrams("梯度消失 ReLU 1×1卷积") == ["梯度", "度消", "消失", "relu", "1x1", "卷积"]


def test_bigram_leg_matches_across_segmentation():
    bm = BM25.from_texts(["梯度消失是因为激活函数饱和", "学习率太大会导致损失震荡"], "bigram")
    assert bm.search("梯度为什么会消失")[0].row == 0
