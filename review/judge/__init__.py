"""The judge: a model that reads a completed dialogue and marks the turns it thinks are wrong.

- `prompt`: the messages and the JSON schema of the answer.
- `parsing`: the tolerant reader of the answer; unknown turns and categories are dropped and
  counted.
- `asking`: the calls, through generation's LLM path: structured output where the server takes
  it, one re-ask when the answer cannot be read.

The pass itself (state, suggestions, usage) is `review.services.judging.dialogue_judge`.
"""
