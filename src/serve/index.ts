/** The OpenAI-compatible HTTP server (`mpt serve`). */
export { MptServer, ClientGone, type ServeOptions, type ServeTokenizer } from './server.js';
export { ApiError } from './api-error.js';
export { renderChat, hasOwnChatTemplate, CHAT_STOP, type ChatMessage } from './chat-template.js';
export { GenerationQueue, type Job } from './queue.js';
