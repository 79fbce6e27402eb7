"""`kitty-ops bench`: measure the running llama servers through their own HTTP API.

One module per job, the pure ones apart from the ones with side effects, so each rule is
unit-tested without a server:

    run        the orchestration: which servers, proven ours; warm-up, levels, records, compare
    load       drives /completion requests (streamed, one connection each, threads for concurrency)
    prompts    the fixed, seeded prompt set (pure)
    stats      percentiles, a level's figures, the cross-checks (pure)
    memory     the memory sampler (RSS, NVML, ioreg) and its pure readers
    record     saved runs under .logs/bench/, and the comparison with the last comparable one (pure)
    yardstick  llama.cpp's own llama-bench on the same model file, and its JSON (pure parse)
    render     the table and the versioned JSON
"""
