/* chatai.h: the C ABI of chatai, a Slurm-native OpenAI-compatible LLM service.
 *
 * Conventions:
 * - Functions return a chatai_status; CHATAI_OK (0) is success. On failure,
 *   chatai_last_error() describes the most recent failure on the calling thread.
 * - Objects are created into an out parameter (first) and released with the matching
 *   *_free function, which accepts NULL.
 * - Option structs start with a `version` field; initialise them with their _INIT macro.
 * - Strings passed in are borrowed for the duration of the call; strings returned are
 *   either borrowed pointers (documented lifetime) or copied into caller buffers.
 * - No C++ exception ever crosses this boundary.
 *
 * Thread safety: functions without an object are safe from any thread; an object may be
 * used by one thread at a time unless its section says otherwise. */
#ifndef CHATAI_H
#define CHATAI_H

#include <stddef.h>
#include <stdint.h>

#include "chatai_version.h"

#if defined(_WIN32)
#define CHATAI_API __declspec(dllexport)
#elif defined(__GNUC__)
#define CHATAI_API __attribute__((visibility("default")))
#else
#define CHATAI_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Compile-time version as one number: major * 10000 + minor * 100 + patch. */
#define CHATAI_VERSION_NUMBER (CHATAI_VERSION_MAJOR * 10000 + CHATAI_VERSION_MINOR * 100 + CHATAI_VERSION_PATCH)

/* Status codes. New codes may be added; treat unknown non-zero values as failures. */
typedef enum chatai_status {
  CHATAI_OK = 0,
  CHATAI_ERROR_INVALID_ARGUMENT = 1,   /* malformed input: nothing was changed */
  CHATAI_ERROR_NOT_FOUND = 2,          /* a file, model or name that does not exist */
  CHATAI_ERROR_IO = 3,                 /* the operating system refused a read or write */
  CHATAI_ERROR_PARSE = 4,              /* malformed bytes (JSON, GGUF, HTTP, template) */
  CHATAI_ERROR_OUT_OF_RANGE = 5,       /* a size or index beyond a limit */
  CHATAI_ERROR_UNSUPPORTED = 6,        /* well-formed, but not implemented by chatai */
  CHATAI_ERROR_TIMEOUT = 7,            /* a deadline passed */
  CHATAI_ERROR_CANCELLED = 8,          /* stopped at the caller's request */
  CHATAI_ERROR_UNAVAILABLE = 9,        /* a peer cannot serve now; retrying may help */
  CHATAI_ERROR_RESOURCE_EXHAUSTED = 10,/* memory, queue or context full */
  CHATAI_ERROR_PERMISSION_DENIED = 11, /* authentication or file permission */
  CHATAI_ERROR_INTERNAL = 12           /* a bug in chatai: please report it */
} chatai_status;

/* The library's version at run time, e.g. "0.1.0". Never NULL; static storage. */
CHATAI_API const char *chatai_version(void);

/* The run-time version as CHATAI_VERSION_NUMBER computes it at compile time. */
CHATAI_API unsigned chatai_version_number(void);

/* A short stable name for a status ("ok", "invalid_argument", ...). Never NULL. */
CHATAI_API const char *chatai_status_string(chatai_status status);

/* The message of the last failure on this thread, or "" if none. Never NULL. The pointer
 * stays valid until the next chatai call on this thread. */
CHATAI_API const char *chatai_last_error(void);

/* Forgets the last failure on this thread. */
CHATAI_API void chatai_clear_error(void);

/* ---- Model files ----------------------------------------------------------------------
 * A GGUF model file, memory-mapped read-only and validated when opened.
 * Thread safety: an open chatai_model_file is immutable; any number of threads may call
 * its accessors at once. */
typedef struct chatai_model_file chatai_model_file;

/* Opens and validates the GGUF file at `path` into *out.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument or not a regular
 * file), CHATAI_ERROR_NOT_FOUND, CHATAI_ERROR_IO, CHATAI_ERROR_PERMISSION_DENIED,
 * CHATAI_ERROR_PARSE (malformed contents; the message names the byte offset), or
 * CHATAI_ERROR_UNSUPPORTED (a GGUF version other than 2 and 3). On failure *out is NULL. */
CHATAI_API chatai_status chatai_model_file_open(chatai_model_file **out, const char *path);

/* Unmaps and releases the file. Pointers borrowed from it become invalid. NULL is fine. */
CHATAI_API void chatai_model_file_free(chatai_model_file *file);

/* Sets *out to the general.architecture value ("llama", ...), a NUL-terminated string
 * borrowed from `file` until chatai_model_file_free.
 * Returns CHATAI_OK, CHATAI_ERROR_NOT_FOUND (no such key) or CHATAI_ERROR_INVALID_ARGUMENT
 * (a NULL argument, or the value is not a string); *out is NULL unless CHATAI_OK. */
CHATAI_API chatai_status chatai_model_file_architecture(const chatai_model_file *file, const char **out);

/* Copies the string metadata value of `key` into `buffer` (NUL-terminated, truncated to
 * buffer_size - 1 bytes) and sets *length (if not NULL) to the value's full length without
 * the NUL. `buffer` may be NULL when buffer_size is 0, to ask for the length.
 * Returns CHATAI_OK, CHATAI_ERROR_NOT_FOUND (no such key), CHATAI_ERROR_INVALID_ARGUMENT
 * (a NULL file or key, or the value is not a string) or CHATAI_ERROR_OUT_OF_RANGE (the
 * buffer was too small: it holds the truncated value and *length the size needed). */
CHATAI_API chatai_status chatai_model_file_metadata_string(const chatai_model_file *file, const char *key,
                                                           char *buffer, size_t buffer_size, size_t *length);

/* The number of tensors in the file; 0 for NULL. */
CHATAI_API size_t chatai_model_file_tensor_count(const chatai_model_file *file);

/* ---- Models ---------------------------------------------------------------------------
 * A model loaded for inference: its weights, vocabulary, chat template and compute backend.
 * Thread safety: chatai_model_tokenize, chatai_model_detokenize and
 * chatai_model_apply_template may run on any number of threads at once; chatai_model_generate
 * calls on one model run one at a time (a second call waits for the first to return);
 * chatai_model_cancel may be called from any thread at any time. chatai_model_free must not
 * overlap any other call on the model. */
typedef struct chatai_model chatai_model;

#define CHATAI_MODEL_OPTIONS_VERSION 1

typedef struct chatai_model_options {
  unsigned version;   /* CHATAI_MODEL_OPTIONS_VERSION */
  const char *path;   /* the GGUF model file; required */
  const char *device; /* "cpu", "cuda" or "auto"; NULL means "auto" */
  int threads;        /* CPU threads; 0: one per hardware thread */
} chatai_model_options;

#define CHATAI_MODEL_OPTIONS_INIT {CHATAI_MODEL_OPTIONS_VERSION, NULL, NULL, 0}

/* Loads the model that opts->path names into *out.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument or path, an unknown
 * options version, an unknown device or a negative thread count), the errors of
 * chatai_model_file_open, CHATAI_ERROR_UNSUPPORTED (an architecture or tensor type chatai
 * cannot run) or CHATAI_ERROR_UNAVAILABLE (device "cuda" without a CUDA build or GPU).
 * On failure *out is NULL. */
CHATAI_API chatai_status chatai_model_load(chatai_model **out, const chatai_model_options *opts);

/* Releases the model. NULL is fine. */
CHATAI_API void chatai_model_free(chatai_model *model);

/* Flags of chatai_model_tokenize, combined with |. */
#define CHATAI_TOKENIZE_ADD_BOS 1u       /* put the BOS token first (when the vocabulary has one) */
#define CHATAI_TOKENIZE_PARSE_SPECIAL 2u /* read control tokens' text (<|im_start|>) as those tokens */

/* Writes the token ids of the `text_len` bytes at `text` to `ids` and their count to *n_out.
 * With capacity 0 (`ids` may then be NULL) it only counts them.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (a NULL model or n_out, NULL text with a
 * non-zero length, NULL ids with a non-zero capacity, or an unknown flag: nothing was
 * written) or CHATAI_ERROR_OUT_OF_RANGE (more than `capacity` ids: `ids` holds the first
 * `capacity` of them and *n_out the count needed). */
CHATAI_API chatai_status chatai_model_tokenize(const chatai_model *model, const char *text, size_t text_len,
                                               unsigned flags, int32_t *ids, size_t capacity, size_t *n_out);

/* Copies the text of the `n_ids` token ids at `ids` into `buffer` (NUL-terminated, truncated
 * to buffer_size - 1 bytes) and sets *length (if not NULL) to the text's full length without
 * the NUL. Control tokens give no text. With buffer_size 0 (`buffer` may then be NULL) it
 * only measures the text and returns CHATAI_OK.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (a NULL model, NULL ids with a non-zero
 * count, NULL buffer with a non-zero size, or an id outside the vocabulary: nothing was
 * written) or CHATAI_ERROR_OUT_OF_RANGE (the buffer was too small: it holds the truncated
 * text, which may end inside a UTF-8 character, and *length the length needed). */
CHATAI_API chatai_status chatai_model_detokenize(const chatai_model *model, const int32_t *ids, size_t n_ids,
                                                 char *buffer, size_t buffer_size, size_t *length);

/* Renders `messages_json` (a NUL-terminated JSON array of {"role", "content"} objects; other
 * keys are passed to the template) through the model's chat template, ending with the
 * assistant's header when add_generation_prompt is non-zero. The text goes to `buffer` as in
 * chatai_model_detokenize.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument, messages that are not an
 * array, or the template refused them: the message is the template's own), CHATAI_ERROR_PARSE
 * (malformed JSON) or CHATAI_ERROR_OUT_OF_RANGE (the buffer was too small, as above). */
CHATAI_API chatai_status chatai_model_apply_template(const chatai_model *model, const char *messages_json,
                                                     int add_generation_prompt, char *buffer, size_t buffer_size,
                                                     size_t *length);

/* Receives each piece of generated text: `len` bytes of whole UTF-8 characters at `text`
 * (NUL-terminated, borrowed until the callback returns). Return 0 to go on, non-zero to stop:
 * chatai_model_generate then returns CHATAI_ERROR_CANCELLED. */
typedef int (*chatai_token_callback)(const char *text, size_t len, void *user);

#define CHATAI_GENERATE_OPTIONS_VERSION 1

typedef struct chatai_generate_options {
  unsigned version;               /* CHATAI_GENERATE_OPTIONS_VERSION */
  const char *prompt;             /* plain text to continue; or NULL and: */
  const char *messages_json;      /* a JSON array of chat messages, rendered with the template */
  int32_t max_tokens;             /* tokens to generate at most; 256 by default */
  float temperature;              /* 0: always the most likely token; 1 by default */
  float top_p;                    /* nucleus sampling; 1 (off) by default */
  int32_t top_k;                  /* keep the k most likely tokens; 0 (all) by default */
  int64_t seed;                   /* >= 0: the same seed and prompt give the same text; -1: random */
  const char *const *stop;        /* `n_stop` stop strings: the text ends before any of them */
  size_t n_stop;
} chatai_generate_options;

#define CHATAI_GENERATE_OPTIONS_INIT {CHATAI_GENERATE_OPTIONS_VERSION, NULL, NULL, 256, 1.0f, 1.0f, 0, -1, NULL, 0}

/* Generates text for exactly one of opts->prompt and opts->messages_json, calling `callback`
 * with each piece as it is produced. Stop strings are never passed to the callback.
 * Returns:
 * - CHATAI_OK: generation ended at an end-of-text token, a stop string or max_tokens, and all
 *   of its text was passed to the callback.
 * - CHATAI_ERROR_CANCELLED: the callback returned non-zero, or chatai_model_cancel was called
 *   while this call was running or waiting for the model; the text passed so far stands.
 * - CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument, an unknown options version, both or neither
 *   of prompt and messages_json, a parameter out of range, or messages the template refused),
 *   CHATAI_ERROR_PARSE (malformed messages_json), CHATAI_ERROR_OUT_OF_RANGE (the prompt does not
 *   fit the context) or CHATAI_ERROR_RESOURCE_EXHAUSTED: nothing was generated and the
 *   callback was not called.
 * In every case the model is left ready for the next call. */
CHATAI_API chatai_status chatai_model_generate(chatai_model *model, const chatai_generate_options *opts,
                                               chatai_token_callback callback, void *user);

/* Stops every chatai_model_generate call on `model` that is running or waiting for the model
 * now; each returns CHATAI_ERROR_CANCELLED after its current step. Later calls are not
 * affected. Returns CHATAI_OK, or CHATAI_ERROR_INVALID_ARGUMENT for a NULL model. */
CHATAI_API chatai_status chatai_model_cancel(chatai_model *model);

/* ---- Gate ------------------------------------------------------------------------------
 * Gate protocol version 1 (see chatai-gate): the strict check of a request header line, and
 * the gate's verbs run over two file descriptors, as the chatai-gate program runs them.
 * Thread safety: both functions may be called from any thread. */

/* Checks one request header line (the JSON object, without its newline) against the
 * anchored allowlists and limits of the gate config at `config_path` (NULL: the built-in
 * defaults). Whether the registry knows the service is not checked here.
 * Returns CHATAI_OK, or CHATAI_ERROR_INVALID_ARGUMENT (a NULL header, or a field refused;
 * chatai_last_error() names it) or CHATAI_ERROR_OUT_OF_RANGE (the line or body_length over a
 * limit), or the error of loading the config. *http_status (may be NULL) is set to the status
 * the gate answers a refused request with (400, 413), 0 otherwise. */
CHATAI_API chatai_status chatai_gate_validate(const char *config_path, const char *header, size_t header_len,
                                              int *http_status);

/* Runs one verb ("keep-alive", "status" or "request", exactly) with the gate config at
 * `config_path`, reading from `in_fd` and writing the answer to `out_fd`; the descriptors
 * stay open and owned by the caller. For "request" the caller keeps `in_fd` open until the
 * response has ended: end-of-file on it means the client has gone away. Refused requests
 * are answered with an HTTP error response and still return CHATAI_OK.
 * Returns CHATAI_OK (the answer was written whole), CHATAI_ERROR_INVALID_ARGUMENT (a NULL
 * path or an unknown verb: nothing was done), the error of loading the config, or
 * CHATAI_ERROR_IO (the answer was cut short: the client went away or the backend failed
 * during the response). */
CHATAI_API chatai_status chatai_gate_run(const char *config_path, const char *verb, int in_fd, int out_fd);

/* ---- Model server ----------------------------------------------------------------------
 * The OpenAI-compatible model server that `chatai serve` runs, started in-process: HTTP on
 * its own threads, /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models,
 * /health, /metrics.
 * Thread safety: chatai_server_port may be called from any thread; chatai_server_drain and
 * chatai_server_stop from any thread but not together with chatai_server_free. */

typedef struct chatai_server chatai_server;

#define CHATAI_SERVER_OPTIONS_VERSION 1

typedef struct chatai_server_options {
  unsigned version;              /* CHATAI_SERVER_OPTIONS_VERSION */
  const char *model_path;        /* the GGUF model file; required */
  const char *served_model_name; /* the name clients send as "model"; NULL: the file name without .gguf */
  const char *host;              /* an address literal to listen on; NULL: "127.0.0.1" */
  int port;                      /* 0: any free port (see chatai_server_port) */
  const char *device;            /* "cpu", "cuda" or "auto"; NULL means "auto" */
  int threads;                   /* CPU threads; 0: one per hardware thread */
  int64_t context;               /* tokens per sequence; 0: the model's training context */
  int64_t parallel;              /* sequences decoding together at most; 0: 8 */
  int64_t max_queue;             /* requests waiting at most, beyond it 429; negative: 64 */
  const char *api_key_file;      /* NULL: no authentication; else a file only its owner may read */
} chatai_server_options;

#define CHATAI_SERVER_OPTIONS_INIT {CHATAI_SERVER_OPTIONS_VERSION, NULL, NULL, NULL, 0, NULL, 0, 0, 0, -1, NULL}

/* Starts a server and returns once its model is loaded and it answers requests.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument or model path, an
 * unknown options version, a port outside 0..65535, a host that is not an address literal,
 * an unknown device), CHATAI_ERROR_IO (the port cannot be bound), the errors of reading the
 * API key file (CHATAI_ERROR_NOT_FOUND, CHATAI_ERROR_PERMISSION_DENIED when others may read
 * it) and of chatai_model_load. On failure *out is NULL and nothing keeps running. */
CHATAI_API chatai_status chatai_server_create(chatai_server **out, const chatai_server_options *opts);

/* The port the server listens on; 0 for NULL. */
CHATAI_API int chatai_server_port(const chatai_server *server);

/* Starts draining: /health answers 503, new requests get 503, requests in flight finish.
 * Returns at once. CHATAI_ERROR_INVALID_ARGUMENT for NULL. */
CHATAI_API chatai_status chatai_server_drain(chatai_server *server);

/* Stops the server now: requests in flight are cut off, its threads joined; the port is
 * closed on return. Idempotent. CHATAI_ERROR_INVALID_ARGUMENT for NULL. */
CHATAI_API chatai_status chatai_server_stop(chatai_server *server);

/* Stops the server if it runs and releases it. NULL is fine. */
CHATAI_API void chatai_server_free(chatai_server *server);

/* ---- Scheduler -------------------------------------------------------------------------
 * The Slurm adapter's autoscaler over one deployment file, as `chatai scheduler` runs it: each
 * tick lists the deployment's jobs, probes them, counts demand and submits, rotates or cancels
 * jobs, then publishes the ready backends in the state directory's registry. Every tick works
 * from the state directory's files, so ticks may run in different processes one after another.
 * Thread safety: chatai_scheduler_init, chatai_scheduler_tick and chatai_scheduler_status may be
 * called from any thread at once; ticks never overlap, even across processes.
 * chatai_scheduler_free must not overlap any other call on the scheduler. */
typedef struct chatai_scheduler chatai_scheduler;

/* Loads and checks the deployment file at `config_path` into *out. Nothing is created on disk
 * and Slurm is not asked.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument, or a field refused:
 * the message names the file and the field), CHATAI_ERROR_NOT_FOUND, CHATAI_ERROR_IO,
 * CHATAI_ERROR_PARSE (malformed JSON; the message names the file). On failure *out is NULL. */
CHATAI_API chatai_status chatai_scheduler_create(chatai_scheduler **out, const char *config_path);

/* Releases the scheduler; the jobs it started keep running. NULL is fine. */
CHATAI_API void chatai_scheduler_free(chatai_scheduler *scheduler);

/* Creates the state directory's layout and publishes the services in the registry.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (NULL) or CHATAI_ERROR_IO /
 * CHATAI_ERROR_PERMISSION_DENIED (the state directory cannot be written). */
CHATAI_API chatai_status chatai_scheduler_init(chatai_scheduler *scheduler);

/* Runs one tick and copies its report, a JSON object {"submitted", "cancelled", "adopted",
 * "rotated", "probes", "unknown_listings": [launcher names whose listing failed],
 * "duration_ms"}, into `report` as chatai_model_detokenize copies text (`report` may be NULL
 * when report_size is 0). A launcher whose listing failed is named in "unknown_listings" and
 * none of its jobs was submitted or cancelled; the call still returns CHATAI_OK.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL scheduler, or NULL report with a
 * non-zero size: no tick ran), CHATAI_ERROR_UNAVAILABLE (another tick held the state directory
 * for too long: no tick ran), CHATAI_ERROR_IO or CHATAI_ERROR_PARSE (the state directory could
 * not be read or written: the last recorded state stands), or CHATAI_ERROR_OUT_OF_RANGE (the tick ran, but
 * the buffer was too small: it holds the truncated report and *length the length needed). */
CHATAI_API chatai_status chatai_scheduler_tick(chatai_scheduler *scheduler, char *report, size_t report_size,
                                               size_t *length);

/* Copies the state recorded by the last tick, without asking Slurm, into `buffer` as a JSON
 * object {"last_tick_ms", "services": [{"id", "launcher", "target", "instances", "ready",
 * "in_flight", "demand", "listing_known"}], "jobs": [{"job", "service", "launcher", "phase",
 * "queue_state", "host", "port", "time_left_s", "time_limit_s", "failed_probes", "in_flight",
 * "replaced_by"}]}, as chatai_model_detokenize copies text. Before the first tick it lists the
 * services with no jobs and "last_tick_ms" 0.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (a NULL scheduler, or NULL buffer with a
 * non-zero size), CHATAI_ERROR_IO or CHATAI_ERROR_PARSE (the state file cannot be read), or
 * CHATAI_ERROR_OUT_OF_RANGE (the buffer was too small: it holds the truncated JSON and
 * *length the length needed). */
CHATAI_API chatai_status chatai_scheduler_status(const chatai_scheduler *scheduler, char *buffer, size_t buffer_size,
                                                 size_t *length);

/* ---- Tunnel ----------------------------------------------------------------------------
 * The transport from the gateway to chatai-gate (gate protocol version 1): a pool of SSH
 * sessions to the login node, one channel per request, the server's host key pinned in a
 * known_hosts file; or the gate run as a local child process per request. Requests stream their
 * answer (the backend's HTTP/1.1 response) through callbacks.
 * Callbacks run on the tunnel's I/O thread: they must return quickly, must not block, and must
 * not call chatai_tunnel_status, chatai_tunnel_keep_alive, chatai_tunnel_wait_connected or
 * chatai_tunnel_free (chatai_tunnel_stream_consumed and chatai_tunnel_stream_cancel are fine).
 * Thread safety: every function on a chatai_tunnel or chatai_tunnel_stream may be called from
 * any thread at once, except chatai_tunnel_free, which must not overlap another call on the
 * tunnel. */
typedef struct chatai_tunnel chatai_tunnel;
typedef struct chatai_tunnel_stream chatai_tunnel_stream;

#define CHATAI_TUNNEL_SSH_OPTIONS_VERSION 1

/* Zero in a count or duration means the default given beside it. */
typedef struct chatai_tunnel_ssh_options {
  unsigned version;              /* CHATAI_TUNNEL_SSH_OPTIONS_VERSION */
  const char *host;              /* the login node; required */
  int port;                      /* 1..65535; 22 by default */
  const char *user;              /* required */
  const char *key_file;          /* an ed25519 or RSA private key; required */
  const char *passphrase;        /* of the key file; NULL: none */
  const char *known_hosts;       /* the file the server's host key is checked against; required */
  int trust_on_first_use;        /* non-zero: accept an unlisted server and add its key to the file */
  int sessions;                  /* SSH connections in the pool; 0: 8 */
  int channels_per_session;      /* at most sshd's MaxSessions; 0: 10 */
  int max_queued;                /* requests waiting for a channel; 0: 4096 */
  int64_t connect_timeout_ms;    /* TCP, key exchange and authentication; 0: 5000 */
  int64_t reconnect_initial_ms;  /* the first backoff after a failure; 0: 100 */
  int64_t reconnect_max_ms;      /* the backoff doubles up to this, with jitter; 0: 2000 */
  int64_t keep_alive_interval_ms;/* 0: 5000; negative: no keep-alive */
  int64_t keep_alive_timeout_ms; /* 0: 5000 */
} chatai_tunnel_ssh_options;

#define CHATAI_TUNNEL_SSH_OPTIONS_INIT {CHATAI_TUNNEL_SSH_OPTIONS_VERSION, NULL, 22, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0}

#define CHATAI_TUNNEL_LOCAL_OPTIONS_VERSION 1

typedef struct chatai_tunnel_local_options {
  unsigned version;               /* CHATAI_TUNNEL_LOCAL_OPTIONS_VERSION */
  const char *gate_program;       /* the chatai-gate binary; required */
  const char *gate_config;        /* passed as --config; required */
  int max_running;                /* gate processes at once; 0: 64 */
  int max_queued;                 /* requests waiting; 0: 4096 */
  int64_t keep_alive_interval_ms; /* 0: 5000; negative: no keep-alive */
  int64_t keep_alive_timeout_ms;  /* 0: 5000 */
} chatai_tunnel_local_options;

#define CHATAI_TUNNEL_LOCAL_OPTIONS_INIT {CHATAI_TUNNEL_LOCAL_OPTIONS_VERSION, NULL, NULL, 0, 0, 0, 0}

/* Creates an SSH tunnel into *out: checks the options, reads the key file and starts
 * connecting in the background (see chatai_tunnel_wait_connected).
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument or required field, an
 * unknown options version, a value out of range; the message names the field) or
 * CHATAI_ERROR_PERMISSION_DENIED (the key file cannot be read or decrypted). On failure *out
 * is NULL and nothing runs. */
CHATAI_API chatai_status chatai_tunnel_create_ssh(chatai_tunnel **out, const chatai_tunnel_ssh_options *opts);

/* Creates a tunnel that runs `gate_program --config gate_config` as a child process per request,
 * with SSH_ORIGINAL_COMMAND set as sshd sets it.
 * Returns CHATAI_OK, or CHATAI_ERROR_INVALID_ARGUMENT (as above). On failure *out is NULL. */
CHATAI_API chatai_status chatai_tunnel_create_local(chatai_tunnel **out, const chatai_tunnel_local_options *opts);

/* Ends every request with CHATAI_ERROR_CANCELLED (their end callbacks run before it returns),
 * closes the sessions and joins the threads. NULL is fine. */
CHATAI_API void chatai_tunnel_free(chatai_tunnel *tunnel);

/* Waits until an SSH session is up. A local tunnel is always connected.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (NULL), CHATAI_ERROR_TIMEOUT (none came up
 * in time), or the error of the last failed attempt: CHATAI_ERROR_UNAVAILABLE, or
 * CHATAI_ERROR_PERMISSION_DENIED (the host key or the client key was refused). */
CHATAI_API chatai_status chatai_tunnel_wait_connected(chatai_tunnel *tunnel, int64_t timeout_ms);

#define CHATAI_TUNNEL_REQUEST_OPTIONS_VERSION 1

typedef struct chatai_tunnel_request_options {
  unsigned version;                 /* CHATAI_TUNNEL_REQUEST_OPTIONS_VERSION */
  const char *id;                   /* the request id the gate logs; required */
  const char *user;                 /* the web user's tag for usage records; NULL: "" */
  const char *service;              /* the service id; required */
  const char *method;               /* NULL: "POST" */
  const char *path;                 /* NULL: "/v1/chat/completions" */
  const char *const *header_names;  /* `n_headers` HTTP headers for the backend */
  const char *const *header_values;
  size_t n_headers;
  const char *body;                 /* `body_len` bytes; may be NULL when body_len is 0 */
  size_t body_len;
  int64_t first_byte_timeout_ms;    /* from the call to the first byte of the answer; 0: 30000 */
  int64_t idle_timeout_ms;          /* the longest gap between two pieces; 0: 60000 */
  size_t window;                    /* bytes delivered but not reported by
                                       chatai_tunnel_stream_consumed before reading pauses; 0: no limit */
} chatai_tunnel_request_options;

#define CHATAI_TUNNEL_REQUEST_OPTIONS_INIT {CHATAI_TUNNEL_REQUEST_OPTIONS_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, NULL, 0, 0, 0, 0}

/* Receives the next `len` bytes of the answer (borrowed until it returns). Return 0 to go on,
 * non-zero to cancel the request (its end callback then gets CHATAI_ERROR_CANCELLED). */
typedef int (*chatai_tunnel_data_callback)(const char *data, size_t len, void *user);

/* Called exactly once per started request, after its last data callback: CHATAI_OK when the
 * gate answered whole (refused requests are HTTP error responses and still end with CHATAI_OK);
 * otherwise CHATAI_ERROR_CANCELLED, CHATAI_ERROR_TIMEOUT, CHATAI_ERROR_UNAVAILABLE (the
 * connection broke after the request was sent, or the gate failed), CHATAI_ERROR_INVALID_ARGUMENT
 * (the gate refused the verb), CHATAI_ERROR_PERMISSION_DENIED (the host key or client key was
 * refused) or CHATAI_ERROR_RESOURCE_EXHAUSTED (the queue is full). `message` describes the
 * failure ("" on success), borrowed until the callback returns. */
typedef void (*chatai_tunnel_end_callback)(chatai_status status, const char *message, void *user);

/* Starts one request and returns at once; the callbacks run later on the I/O thread with `user`.
 * `on_data` may be NULL (the answer is dropped). When `out` is not NULL, *out receives a handle
 * for chatai_tunnel_stream_consumed and chatai_tunnel_stream_cancel, released with
 * chatai_tunnel_stream_free (freeing it does not cancel the request).
 * Returns CHATAI_OK (on_end will be called exactly once), or CHATAI_ERROR_INVALID_ARGUMENT (a NULL
 * tunnel, opts, on_end, id or service, an unknown options version, NULL body with a non-zero
 * length, a NULL header name or value, a negative timeout): nothing was started, no callback
 * runs and *out is NULL. */
CHATAI_API chatai_status chatai_tunnel_request(chatai_tunnel *tunnel, const chatai_tunnel_request_options *opts,
                                               chatai_tunnel_data_callback on_data, chatai_tunnel_end_callback on_end,
                                               void *user, chatai_tunnel_stream **out);

/* Reports `bytes` of the answer as passed on, reopening the window (see window above).
 * Returns CHATAI_OK or CHATAI_ERROR_INVALID_ARGUMENT (NULL). */
CHATAI_API chatai_status chatai_tunnel_stream_consumed(chatai_tunnel_stream *stream, size_t bytes);

/* Ends the request now: its channel (or child) is closed, so the gate sees its client leave;
 * the end callback gets CHATAI_ERROR_CANCELLED unless the request had ended already.
 * Returns CHATAI_OK or CHATAI_ERROR_INVALID_ARGUMENT (NULL). */
CHATAI_API chatai_status chatai_tunnel_stream_cancel(chatai_tunnel_stream *stream);

/* Releases the handle; the request goes on. NULL is fine. */
CHATAI_API void chatai_tunnel_stream_free(chatai_tunnel_stream *stream);

/* Copies the gate's status document (JSON: services, models, ready backends, demand) into
 * `buffer` as chatai_model_detokenize copies text (`buffer` may be NULL when buffer_size is 0).
 * Blocks for at most timeout_ms (0: 10000).
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (a NULL tunnel, NULL buffer with a non-zero
 * size, a negative timeout), an error of the request as the end callback lists them, or
 * CHATAI_ERROR_OUT_OF_RANGE (the buffer was too small: it holds the truncated document and
 * *length the length needed). */
CHATAI_API chatai_status chatai_tunnel_status(chatai_tunnel *tunnel, int64_t timeout_ms, char *buffer,
                                              size_t buffer_size, size_t *length);

/* Runs one keep-alive now (the gate answers OK and runs a scheduler tick when one is due).
 * Blocks for at most timeout_ms (0: 10000).
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (NULL, a negative timeout), an error of the
 * request as the end callback lists them, or CHATAI_ERROR_PARSE (an answer other than OK). */
CHATAI_API chatai_status chatai_tunnel_keep_alive(chatai_tunnel *tunnel, int64_t timeout_ms);

#define CHATAI_TUNNEL_HEALTH_VERSION 1

typedef struct chatai_tunnel_health {
  unsigned version;               /* CHATAI_TUNNEL_HEALTH_VERSION, set by the caller */
  int alive;                      /* non-zero: the last keep-alive was answered */
  int64_t since_keep_alive_ms;    /* since that answer; -1: never */
  int sessions_up;                /* SSH sessions connected (1 for a local tunnel) */
  int requests_running;
  int requests_queued;
  char last_error[256];           /* the last connection or keep-alive error, truncated; "" if none */
} chatai_tunnel_health;

#define CHATAI_TUNNEL_HEALTH_INIT {CHATAI_TUNNEL_HEALTH_VERSION, 0, -1, 0, 0, 0, {0}}

/* Fills *out with a snapshot of the tunnel's health; never blocks.
 * Returns CHATAI_OK or CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument or an unknown version). */
CHATAI_API chatai_status chatai_tunnel_get_health(const chatai_tunnel *tunnel, chatai_tunnel_health *out);
/* ---- Gateway ---------------------------------------------------------------------------
 * The web-facing service that `chatai gateway` runs, started in-process: the OpenAI API with
 * API keys, per-key limits and usage accounting (SQLite), routed by model through the tunnel
 * to chatai-gate, plus /health, /metrics and the chat page. The config is the JSON document
 * README.md and include/chatai/gateway/config.hpp describe.
 * Thread safety: chatai_gateway_port may be called from any thread; chatai_gateway_start and
 * chatai_gateway_stop from one thread at a time, not together with chatai_gateway_free. */
typedef struct chatai_gateway chatai_gateway;

#define CHATAI_GATEWAY_OPTIONS_VERSION 1

typedef struct chatai_gateway_options {
  unsigned version;        /* CHATAI_GATEWAY_OPTIONS_VERSION */
  const char *config_path; /* the config file, or NULL when config_json is given */
  const char *config_json; /* the config's JSON text, or NULL when config_path is given */
} chatai_gateway_options;

#define CHATAI_GATEWAY_OPTIONS_INIT {CHATAI_GATEWAY_OPTIONS_VERSION, NULL, NULL}

/* Reads the config, opens the database and sets up the transport; nothing listens yet.
 * Returns CHATAI_OK, or: CHATAI_ERROR_INVALID_ARGUMENT (a NULL argument, an unknown options
 * version, neither or both of config_path and config_json, or a config field refused: the
 * message names it), CHATAI_ERROR_NOT_FOUND (no config file), CHATAI_ERROR_PARSE (the config
 * is not JSON), CHATAI_ERROR_IO (the database cannot be opened). On failure *out is NULL. */
CHATAI_API chatai_status chatai_gateway_create(chatai_gateway **out, const chatai_gateway_options *opts);

/* Fetches the cluster's status once (a failure shows in /health, not here) and listens.
 * Returns CHATAI_OK, CHATAI_ERROR_INVALID_ARGUMENT (NULL, or started before) or
 * CHATAI_ERROR_IO (the address cannot be bound: the gateway is then stopped). */
CHATAI_API chatai_status chatai_gateway_start(chatai_gateway *gateway);

/* The port the gateway listens on; 0 for NULL or before chatai_gateway_start. */
CHATAI_API int chatai_gateway_port(const chatai_gateway *gateway);

/* Stops listening, lets streams in flight end (until the config's shutdown grace), writes the
 * queued usage. Idempotent. CHATAI_ERROR_INVALID_ARGUMENT for NULL. */
CHATAI_API chatai_status chatai_gateway_stop(chatai_gateway *gateway);

/* Stops the gateway if it runs and releases it. NULL is fine. */
CHATAI_API void chatai_gateway_free(chatai_gateway *gateway);

#ifdef __cplusplus
}
#endif

#endif /* CHATAI_H */
