"""`rag eval`: accuracy of the assistant, measured on the corpus' own questions (eval/*.jsonl).

data (eval sets, gold matching) -> metrics (scoring rules) -> one module per suite (mcq, mcq_judge,
retrieval, answers, tuning: each takes an Assistant and items and returns data) -> suites (what each
`rag eval <suite>` reads and runs) -> report and plots (files under eval/results/). The LLM scores of
the MCQ suite are cached (cache). Flags, printing and the throwaway index live in rag.cli.
"""
