"""`chatbot serve`: customers reach the same Session, store, FAQ policy and engines over HTTP.

An OpenAI-compatible API (chatbot.serve.routes), a static web chat page (static/), a bounded
request queue (chatbot.serve.limiter) and the one place that opens a Session per turn
(chatbot.serve.turns). No business logic lives here: answers, hand-offs and saving are Session's.
"""
