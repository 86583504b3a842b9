"""The FAQ bot: knowledge base (load, index, encoder, retrieval), the policy, fact check, eval."""
