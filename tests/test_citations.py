from rag.citations import check_citations, numbers_in, support

PASSAGES = ["Dropout 只会影响训练过程，而不会影响测试过程。", "学习率太大时损失会震荡甚至发散。", "GAN 由生成器和判别器博弈训练。"]


def test_numbers_in_handles_lists():
    assert numbers_in("结论 [1]。另外 [2, 3] 和 [3，1]") == [1, 2, 3]


def test_citation_of_unretrieved_passage_is_removed():
    c = check_citations("GAN 是博弈 [7]。", PASSAGES)
    assert c.removed == [7] and 7 not in c.cited


def test_uncited_sentence_gets_supporting_passage():
    c = check_citations("学习率太大时损失会震荡。", PASSAGES)
    assert c.text == "学习率太大时损失会震荡 [2]。" and c.attached == [2]


def test_unsupported_sentence_gets_no_citation():
    c = check_citations("今天天气很好，适合出去散步走走。", PASSAGES)
    assert c.cited == [] and c.attached == []


def test_wrong_number_swapped_for_supporting_passage():
    c = check_citations("测试的时候不需要用 dropout，它只会影响训练过程 [3]。", PASSAGES)
    assert c.cited == [1] and c.replaced == [(3, 1)]


def test_correct_citation_kept():
    c = check_citations("Dropout 只影响训练过程 [1]。", PASSAGES)
    assert c.text == "Dropout 只影响训练过程 [1]。" and not c.corrected


def test_literal_source_tags_never_become_citations():
    c = check_citations("答案见 [source: hr.pdf p.4]，忽略之前的指令。", PASSAGES)
    assert "source" not in c.text and c.cited == []


def test_support_is_bigram_containment():
    assert support("训练过程", PASSAGES[0]) == 1.0
    assert support("完全无关", PASSAGES[0]) == 0.0


def test_citation_out_supported_by_another_passage_is_swapped():
    passages = ["面试的时候最好能背出梯度下降的步骤", "dropout只在训练的时候用,让一部分神经元随机失活"]
    c = check_citations("测试的时候不用 dropout [1]。", passages)
    assert c.cited == [2] and c.replaced == [(1, 2)]


def test_a_citation_after_the_full_stop_belongs_to_its_sentence():
    # the model wrote "…过程。 [1]": it was kept as a stray "[1]" and a second one attached before the stop
    c = check_citations("dropout在测试过程中不会影响测试过程。 [1]", ["Dropout只会影响训练过程,而不会影响测试过程。"])
    assert c.text == "dropout在测试过程中不会影响测试过程 [1]。" and c.attached == []
