"""The cutover: the switch the application makes from the source to the target, after a GO.

    preconditions   a recent GO, caught up, schema check passed, no INVALID index, a freeze
                    that can work (`preconditions.check`: every reason, nothing frozen)
    approval        a Prefect run-input form, `--yes`, or a prompt (the flow's job)
    validate        a full pass before the freeze (foreign keys left NOT VALID validated)
    freeze          writes on the source stop (`freeze`: read-only + ended sessions; hooks)
    drain           a fence on the source, applied exactly on the target (`drain`)
    final check     the tables changed since the full pass, compared on the frozen source
    sequences       the target's set from the source's (`migwatch.sequences.cutover_values`)
    switch          the user's hook points the application at the target (`hooks`)
    teardown        connector, slot and applier removed, unless the spec keeps CDC

Any failure between the freeze and the end of the switch undoes the freeze; `timeline` keeps
each step's start, end and outcome and the write-downtime (freeze → switch) for the report.
There is no replication back from the target to the source after the switch.
"""
