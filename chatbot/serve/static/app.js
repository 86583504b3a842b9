// The chat page: sends the customer's message, streams the reply in, shows the cited help
// article and a hand-off, and keeps the conversation id so a reload shows the conversation.
// Every text from the server or the customer goes in with textContent, never as HTML.
"use strict";

const CONVERSATION = "chatbot.conversation";
const API_KEY = "chatbot.apiKey";
const log = document.getElementById("log");
const form = document.getElementById("composer");
const input = document.getElementById("message");
const sendButton = document.getElementById("send");
const status = document.getElementById("status");
const keyForm = document.getElementById("key-form");

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function bubble(role, text) {
  document.getElementById("hint")?.remove();
  const node = element("div", `msg ${role}`);
  node.append(element("p", "text", text));
  log.append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

// The FAQ fields of a reply: the help article it cites, a hand-off, facts not in the article,
// and the entries an ask-back offers (a tap answers with the entry's number).
function showOutcome(node, reply) {
  if (reply.clarify && reply.clarify.length) {
    const choices = element("div", "choices");
    reply.clarify.forEach((choice, index) => {
      const button = element("button", "choice", choice.question);
      button.type = "button";
      button.addEventListener("click", () => submit(String(index + 1)));
      choices.append(button);
    });
    node.append(choices);
  }
  for (const source of reply.sources || []) {
    const aside = element("details", "source");
    aside.append(element("summary", "", `From our help article: ${source.question || source.id}`));
    if (source.answer) aside.append(element("p", "", source.answer));
    node.append(aside);
  }
  if (reply.handoff) {
    node.append(element("p", "handoff", "Passed to our support team: a person will get back to you."));
  }
  if (reply.unsupported_facts && reply.unsupported_facts.length) {
    const facts = reply.unsupported_facts.join(", ");
    node.append(element("p", "unsupported", `Not in the article, please check: ${facts}`));
  }
}

function headers() {
  const found = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(API_KEY);
  if (key) found.Authorization = `Bearer ${key}`;
  return found;
}

async function errorText(response) {
  if (response.status === 503) {
    const wait = response.headers.get("Retry-After") || "a few";
    return `We are busy right now; please try again in ${wait} seconds.`;
  }
  try {
    return (await response.json()).error.message;
  } catch {
    return `The server answered ${response.status}.`;
  }
}

// Server-sent events from a fetch body: yields each event's data (a JSON text or "[DONE]").
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    const parts = buffer.split(/\r?\n\r?\n/);
    buffer = parts.pop();
    for (const part of parts) {
      const data = part
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield data;
    }
  }
}

async function send(text) {
  bubble("user", text);
  const reply = bubble("assistant", "");
  const replyText = reply.querySelector(".text");
  reply.classList.add("streaming");
  const body = { messages: [{ role: "user", content: text }], stream: true };
  const conversation = localStorage.getItem(CONVERSATION);
  if (conversation) body.conversation_id = conversation;
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(),
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    if (response.status === 401) keyForm.hidden = false;
    if (response.status === 404) localStorage.removeItem(CONVERSATION);
    reply.classList.add("error");
    replyText.textContent = await errorText(response);
    return;
  }
  localStorage.setItem(CONVERSATION, response.headers.get("X-Conversation-Id"));
  for await (const data of events(response)) {
    if (data === "[DONE]") break;
    const event = JSON.parse(data);
    if (event.error) {
      reply.classList.add("error");
      replyText.textContent = event.error.message;
      break;
    }
    const choice = (event.choices || [])[0];
    if (choice && choice.delta && choice.delta.content) {
      replyText.textContent += choice.delta.content;
      reply.scrollIntoView({ block: "end" });
    }
    if (choice && choice.finish_reason) {
      // The reply as saved: a reply that began repeating itself was cut where the repeat began.
      if (typeof event.answer === "string") replyText.textContent = event.answer;
      showOutcome(reply, event);
      if (event.handoff) awaitPerson();
    }
  }
}

// The conversation as the server saved it; null when there is none to show.
async function savedConversation() {
  const conversation = localStorage.getItem(CONVERSATION);
  if (!conversation) return null;
  const response = await fetch(`/v1/conversations/${encodeURIComponent(conversation)}`, {
    headers: headers(),
  });
  if (response.status === 404) {
    localStorage.removeItem(CONVERSATION);
    return null;
  }
  if (!response.ok) {
    if (response.status === 401) keyForm.hidden = false;
    status.textContent = await errorText(response);
    return null;
  }
  return response.json();
}

function showPerson(message) {
  const node = bubble("assistant person", message.content);
  node.prepend(element("p", "from", "Support team"));
}

// After a hand-off, a person answers later (`chatbot handoffs --reply`): until their reply
// comes, the page asks for the conversation every POLL_MS and shows the replies it lacks.
const POLL_MS = 15000;
let personReplies = 0;
let polling = null;

function stopWaiting() {
  clearInterval(polling);
  polling = null;
}

function awaitPerson() {
  if (polling) return;
  polling = setInterval(async () => {
    const found = await savedConversation().catch(() => null);
    if (!found) return;
    const replies = found.messages.filter((message) => message.person);
    replies.slice(personReplies).forEach(showPerson);
    if (replies.length > personReplies) stopWaiting();
    personReplies = Math.max(personReplies, replies.length);
  }, POLL_MS);
}

// A reload: show the conversation this browser had, as the server saved it.
async function restore() {
  const found = await savedConversation();
  if (!found) return;
  let waiting = false;
  for (const message of found.messages) {
    if (message.person) {
      showPerson(message);
      personReplies += 1;
      waiting = false;
      continue;
    }
    const node = bubble(message.role, message.content);
    if (message.role === "assistant") showOutcome(node, message);
    waiting = waiting || Boolean(message.handoff);
  }
  if (waiting) awaitPerson();
}

async function submit(text) {
  if (!text || sendButton.disabled) return;
  sendButton.disabled = true;
  status.textContent = "";
  try {
    await send(text);
  } catch (error) {
    status.textContent = `Could not reach the server (${error.message}).`;
  } finally {
    log.querySelectorAll(".streaming").forEach((node) => node.classList.remove("streaming"));
    sendButton.disabled = false;
    input.focus();
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = input.value.trim();
  input.value = "";
  submit(text);
});

input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    form.requestSubmit();
  }
});

document.getElementById("new-chat").addEventListener("click", () => {
  localStorage.removeItem(CONVERSATION);
  stopWaiting();
  personReplies = 0;
  const hint = element("p", "hint", "A new conversation: ask us anything.");
  hint.id = "hint";
  log.replaceChildren(hint);
  input.focus();
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(API_KEY, document.getElementById("key").value);
  keyForm.hidden = true;
  restore();
});

fetch("/health")
  .then((response) => response.json())
  .then((health) => { input.maxLength = health.max_message_chars; })
  .catch(() => {});
restore();
