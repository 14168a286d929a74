/* Calls the C ABI from C99: version, status names, the last-error contract, model files, models,
 * the gate, the model server, the scheduler, the tunnel and the gateway. */
#define _XOPEN_SOURCE 700 /* mkdtemp, nftw, pthread, chmod */
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chatai.h"

static int failures = 0;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

/* Model files: open the real model, read its architecture, a string and the tensor count. */
static void test_model_files(void) {
  chatai_model_file *file = NULL;
  const char *arch = NULL;
  char name[8];
  size_t length = 0;

  EXPECT(chatai_model_file_open(&file, "/nonexistent/model.gguf") == CHATAI_ERROR_NOT_FOUND);
  EXPECT(file == NULL);
  EXPECT(strstr(chatai_last_error(), "/nonexistent/model.gguf") != NULL);
  EXPECT(chatai_model_file_open(NULL, CHATAI_TEST_MODEL) == CHATAI_ERROR_INVALID_ARGUMENT);
  chatai_model_file_free(NULL);
  EXPECT(chatai_model_file_tensor_count(NULL) == 0);
  if (strlen(CHATAI_TEST_MODEL) == 0) return;

  EXPECT(chatai_model_file_open(&file, CHATAI_TEST_MODEL) == CHATAI_OK);
  if (file == NULL) return;
  EXPECT(chatai_model_file_architecture(file, &arch) == CHATAI_OK);
  EXPECT(arch != NULL && strcmp(arch, "llama") == 0);
  EXPECT(chatai_model_file_tensor_count(file) == 272);

  EXPECT(chatai_model_file_metadata_string(file, "tokenizer.ggml.model", NULL, 0, &length) == CHATAI_OK);
  EXPECT(length == 4);
  EXPECT(chatai_model_file_metadata_string(file, "tokenizer.ggml.model", name, sizeof name, &length) == CHATAI_OK);
  EXPECT(strcmp(name, "gpt2") == 0);
  EXPECT(chatai_model_file_metadata_string(file, "general.basename", name, 4, &length) == CHATAI_ERROR_OUT_OF_RANGE);
  EXPECT(strcmp(name, "smo") == 0 && length == 7);
  EXPECT(chatai_model_file_metadata_string(file, "no.such.key", name, sizeof name, NULL) == CHATAI_ERROR_NOT_FOUND);
  EXPECT(chatai_model_file_metadata_string(file, "llama.block_count", name, sizeof name, NULL) ==
         CHATAI_ERROR_INVALID_ARGUMENT);
  chatai_model_file_free(file);
}

/* Text collected from chatai_model_generate's callback; stops after `limit` pieces when set. */
struct collected {
  char text[1024];
  size_t length;
  int pieces;
  int limit;
  chatai_model *cancel_model; /* when set, the callback calls chatai_model_cancel on it */
};

static int collect(const char *text, size_t len, void *user) {
  struct collected *c = (struct collected *)user;
  EXPECT(strlen(text) == len);
  if (c->length + len < sizeof c->text) {
    memcpy(c->text + c->length, text, len);
    c->length += len;
    c->text[c->length] = '\0';
  }
  ++c->pieces;
  if (c->cancel_model != NULL) EXPECT(chatai_model_cancel(c->cancel_model) == CHATAI_OK);
  return c->limit > 0 && c->pieces >= c->limit;
}

static void test_model_loading(void) {
  chatai_model_options opts = CHATAI_MODEL_OPTIONS_INIT;
  chatai_model *model = NULL;

  EXPECT(opts.version == CHATAI_MODEL_OPTIONS_VERSION && opts.path == NULL && opts.threads == 0);
  EXPECT(chatai_model_load(NULL, &opts) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_model_load(&model, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_model_load(&model, &opts) == CHATAI_ERROR_INVALID_ARGUMENT);
  opts.path = "/nonexistent/model.gguf";
  EXPECT(chatai_model_load(&model, &opts) == CHATAI_ERROR_NOT_FOUND);
  EXPECT(model == NULL);
  opts.version = 99;
  EXPECT(chatai_model_load(&model, &opts) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "version") != NULL);
  opts.version = CHATAI_MODEL_OPTIONS_VERSION;
  opts.path = CHATAI_TEST_MODEL;
  opts.device = "tpu";
  EXPECT(chatai_model_load(&model, &opts) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(model == NULL);
  chatai_model_free(NULL);
  EXPECT(chatai_model_cancel(NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
}

static void test_model_text(chatai_model *model) {
  static const char text[] = "Hello, world! Tokenizers split text into pieces.";
  int32_t ids[64];
  int32_t few[2];
  int32_t bad_id = -5;
  size_t n = 0, needed = 0, length = 0;
  char decoded[128];
  char small[8];
  char rendered[256];
  static const char messages[] = "[{\"role\":\"user\",\"content\":\"Hi\"}]";

  EXPECT(chatai_model_tokenize(model, text, strlen(text), 0, NULL, 0, &needed) == CHATAI_OK);
  EXPECT(needed > 5 && needed < 64);
  EXPECT(chatai_model_tokenize(model, text, strlen(text), 0, ids, 64, &n) == CHATAI_OK);
  EXPECT(n == needed);
  EXPECT(chatai_model_tokenize(model, text, strlen(text), 0, few, 2, &n) == CHATAI_ERROR_OUT_OF_RANGE);
  EXPECT(n == needed && few[0] == ids[0] && few[1] == ids[1]);
  EXPECT(chatai_model_tokenize(model, text, strlen(text), 0x80u, ids, 64, &n) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_model_tokenize(model, NULL, 3, 0, ids, 64, &n) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_model_tokenize(model, "<|im_start|>", 12, CHATAI_TOKENIZE_PARSE_SPECIAL, ids, 64, &n) == CHATAI_OK);
  EXPECT(n == 1);
  EXPECT(chatai_model_tokenize(model, "<|im_start|>", 12, 0, ids, 64, &n) == CHATAI_OK);
  EXPECT(n > 1);

  EXPECT(chatai_model_tokenize(model, text, strlen(text), 0, ids, 64, &n) == CHATAI_OK);
  EXPECT(chatai_model_detokenize(model, ids, n, decoded, sizeof decoded, &length) == CHATAI_OK);
  EXPECT(strcmp(decoded, text) == 0 && length == strlen(text));
  EXPECT(chatai_model_detokenize(model, ids, n, NULL, 0, &length) == CHATAI_OK);
  EXPECT(length == strlen(text));
  EXPECT(chatai_model_detokenize(model, ids, n, small, sizeof small, &length) == CHATAI_ERROR_OUT_OF_RANGE);
  EXPECT(strncmp(small, text, 7) == 0 && small[7] == '\0' && length == strlen(text));
  EXPECT(chatai_model_detokenize(model, &bad_id, 1, decoded, sizeof decoded, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);

  EXPECT(chatai_model_apply_template(model, messages, 1, rendered, sizeof rendered, &length) == CHATAI_OK);
  EXPECT(strstr(rendered, "<|im_start|>user\nHi<|im_end|>\n") != NULL);
  EXPECT(length >= 22 && strcmp(rendered + length - 22, "<|im_start|>assistant\n") == 0);
  EXPECT(chatai_model_apply_template(model, messages, 0, rendered, sizeof rendered, &length) == CHATAI_OK);
  EXPECT(length >= 11 && strcmp(rendered + length - 11, "<|im_end|>\n") == 0);
  EXPECT(chatai_model_apply_template(model, "[{", 1, rendered, sizeof rendered, NULL) == CHATAI_ERROR_PARSE);
  EXPECT(chatai_model_apply_template(model, "{}", 1, rendered, sizeof rendered, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
}

static void test_model_generation(chatai_model *model) {
  static const char question[] =
      "[{\"role\":\"user\",\"content\":\"What is the capital of France? Answer in one sentence.\"}]";
  const char *stops[1];
  chatai_generate_options opts = CHATAI_GENERATE_OPTIONS_INIT;
  struct collected out, again;

  EXPECT(opts.version == CHATAI_GENERATE_OPTIONS_VERSION && opts.max_tokens == 256 && opts.seed == -1);
  memset(&out, 0, sizeof out);
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_ERROR_INVALID_ARGUMENT);
  opts.prompt = "Once upon a time";
  opts.messages_json = question;
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_ERROR_INVALID_ARGUMENT);
  opts.prompt = NULL;
  EXPECT(chatai_model_generate(model, &opts, NULL, &out) == CHATAI_ERROR_INVALID_ARGUMENT);
  opts.messages_json = "[";
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_ERROR_PARSE);
  opts.messages_json = question;
  opts.top_p = 2.0f;
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(out.pieces == 0);

  opts.top_p = 1.0f;
  opts.temperature = 0.0f;
  opts.max_tokens = 24;
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_OK);
  EXPECT(strstr(out.text, "Paris") != NULL);
  if (strstr(out.text, "Paris") == NULL) fprintf(stderr, "generated: %s\n", out.text);

  stops[0] = "Paris";
  opts.stop = stops;
  opts.n_stop = 1;
  memset(&out, 0, sizeof out);
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_OK);
  EXPECT(out.length > 0 && strstr(out.text, "Paris") == NULL);
  opts.stop = NULL;
  opts.n_stop = 0;

  memset(&out, 0, sizeof out);
  out.limit = 2;
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_ERROR_CANCELLED);
  EXPECT(out.pieces == 2);

  memset(&out, 0, sizeof out);
  out.cancel_model = model;
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_ERROR_CANCELLED);
  EXPECT(out.pieces == 1);

  opts.messages_json = NULL;
  opts.prompt = "The library opens at nine in the morning and";
  opts.temperature = 1.0f;
  opts.seed = 42;
  opts.max_tokens = 12;
  memset(&out, 0, sizeof out);
  memset(&again, 0, sizeof again);
  EXPECT(chatai_model_generate(model, &opts, collect, &out) == CHATAI_OK);
  EXPECT(chatai_model_generate(model, &opts, collect, &again) == CHATAI_OK);
  EXPECT(out.length > 0 && strcmp(out.text, again.text) == 0);
}

/* Models: loading errors, then tokenizing, templates and generation on the real model. */
static void test_models(void) {
  chatai_model_options opts = CHATAI_MODEL_OPTIONS_INIT;
  chatai_model *model = NULL;

  test_model_loading();
  if (strlen(CHATAI_TEST_MODEL) == 0) return;
  opts.path = CHATAI_TEST_MODEL;
  opts.device = "cpu";
  opts.threads = 2;
  EXPECT(chatai_model_load(&model, &opts) == CHATAI_OK);
  if (model == NULL) {
    fprintf(stderr, "chatai_model_load: %s\n", chatai_last_error());
    return;
  }
  test_model_text(model);
  test_model_generation(model);
  chatai_model_free(model);
}

/* Gate: the strict header check, and the verbs run over descriptors. */
static void test_gate(void) {
  static const char good[] =
      "{\"v\":1,\"id\":\"r1\",\"service\":\"chat\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\","
      "\"body_length\":2}";
  static const char traversal[] =
      "{\"v\":1,\"id\":\"r1\",\"service\":\"../../x\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\","
      "\"body_length\":2}";
  static const char huge[] =
      "{\"v\":1,\"id\":\"r1\",\"service\":\"chat\",\"method\":\"POST\",\"path\":\"/v1/chat/completions\","
      "\"body_length\":999999999}";
  const char *config_path = "chatai_gate_c_test.json";
  int http_status = -1;
  FILE *config;

  EXPECT(chatai_gate_validate(NULL, good, strlen(good), &http_status) == CHATAI_OK);
  EXPECT(http_status == 0);
  EXPECT(chatai_gate_validate(NULL, traversal, strlen(traversal), &http_status) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(http_status == 400);
  EXPECT(strstr(chatai_last_error(), "service") != NULL);
  EXPECT(chatai_gate_validate(NULL, huge, strlen(huge), &http_status) == CHATAI_ERROR_OUT_OF_RANGE);
  EXPECT(http_status == 413);
  EXPECT(chatai_gate_validate(NULL, good, 10, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gate_validate(NULL, NULL, 0, &http_status) == CHATAI_ERROR_INVALID_ARGUMENT);

  EXPECT(chatai_gate_run(config_path, "bogus", 0, 1) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gate_run(config_path, NULL, 0, 1) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gate_run(NULL, "status", 0, 1) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gate_run("/nonexistent/gate.json", "status", 0, 1) == CHATAI_ERROR_NOT_FOUND);
  config = fopen(config_path, "w");
  EXPECT(config != NULL);
  if (config == NULL) return;
  fputs("{\"state_dir\":\"/nonexistent/chatai-gate-c-test\"}\n", config);
  fclose(config);
  EXPECT(chatai_gate_run(config_path, "keep-alive", 0, 1) == CHATAI_OK);
  EXPECT(chatai_gate_run(config_path, "status", 0, 1) == CHATAI_OK);
  remove(config_path);
}

/* Model server: started in-process on a free port, drained, stopped and freed. */
static void test_server(void) {
  chatai_server_options opts = CHATAI_SERVER_OPTIONS_INIT;
  chatai_server *server = NULL, *second = NULL;

  EXPECT(opts.version == CHATAI_SERVER_OPTIONS_VERSION && opts.port == 0 && opts.model_path == NULL);
  EXPECT(chatai_server_create(&server, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_server_create(&server, &opts) == CHATAI_ERROR_INVALID_ARGUMENT);
  opts.model_path = "/nonexistent/model.gguf";
  EXPECT(chatai_server_create(&server, &opts) == CHATAI_ERROR_NOT_FOUND);
  EXPECT(server == NULL);
  EXPECT(chatai_server_port(NULL) == 0);
  EXPECT(chatai_server_stop(NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  chatai_server_free(NULL);
  if (strlen(CHATAI_TEST_MODEL) == 0) return;

  opts.model_path = CHATAI_TEST_MODEL;
  opts.context = 256;
  opts.threads = 1;
  EXPECT(chatai_server_create(&server, &opts) == CHATAI_OK);
  if (server == NULL) return;
  EXPECT(chatai_server_port(server) > 0);
  opts.port = chatai_server_port(server);
  EXPECT(chatai_server_create(&second, &opts) != CHATAI_OK); /* the port is taken */
  EXPECT(second == NULL);
  EXPECT(chatai_server_drain(server) == CHATAI_OK);
  EXPECT(chatai_server_stop(server) == CHATAI_OK);
  EXPECT(chatai_server_stop(server) == CHATAI_OK);
  chatai_server_free(server);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Writes `text` to dir/name; returns 0 on success. */
static int write_file(const char *dir, const char *name, const char *text) {
  char path[512];
  FILE *f;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  f = fopen(path, "w");
  if (f == NULL) return -1;
  fputs(text, f);
  return fclose(f);
}

/* Scheduler: a deployment of one local-launcher service with min_instances 0, so that ticks
 * start no process; init, tick and status, the buffer contract and a refused config. */
static void test_scheduler(void) {
  static const char deploy[] =
      "{\"state_dir\": \"state\", \"job_prefix\": \"ctest-\", \"services\": [{\"id\": \"chat\", "
      "\"models\": [\"m\"], \"launcher\": \"local\", \"min_instances\": 0, \"max_instances\": 1, "
      "\"template\": \"#!/bin/sh\\nexit 0\\n\"}]}\n";
  static const char bad[] =
      "{\"state_dir\": \"state\", \"services\": [{\"id\": \"chat\", \"models\": [\"m\"], "
      "\"min_instances\": 2, \"max_instances\": 1, \"template\": \"#!/bin/sh\\n\"}]}\n";
  char dir[] = "/tmp/chatai-capi-sched-XXXXXX";
  char path[512], bad_path[512], buffer[4096], small[8];
  size_t length = 0, needed = 0;
  chatai_scheduler *scheduler = NULL;

  chatai_scheduler_free(NULL);
  EXPECT(chatai_scheduler_create(NULL, "deploy.json") == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_scheduler_create(&scheduler, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_scheduler_init(NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_scheduler_tick(NULL, NULL, 0, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_scheduler_status(NULL, NULL, 0, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_scheduler_create(&scheduler, "/nonexistent/chatai-deploy.json") == CHATAI_ERROR_NOT_FOUND);
  EXPECT(scheduler == NULL);
  EXPECT(strstr(chatai_last_error(), "/nonexistent/chatai-deploy.json") != NULL);

  EXPECT(mkdtemp(dir) != NULL);
  EXPECT(write_file(dir, "deploy.json", deploy) == 0);
  EXPECT(write_file(dir, "bad.json", bad) == 0);
  snprintf(path, sizeof path, "%s/deploy.json", dir);
  snprintf(bad_path, sizeof bad_path, "%s/bad.json", dir);

  EXPECT(chatai_scheduler_create(&scheduler, bad_path) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(scheduler == NULL);
  EXPECT(strstr(chatai_last_error(), "bad.json") != NULL);
  EXPECT(strstr(chatai_last_error(), "max_instances") != NULL);

  EXPECT(chatai_scheduler_create(&scheduler, path) == CHATAI_OK);
  if (scheduler != NULL) {
    EXPECT(chatai_scheduler_status(scheduler, buffer, sizeof buffer, &length) == CHATAI_OK);
    EXPECT(strstr(buffer, "\"last_tick_ms\":0") != NULL);
    EXPECT(chatai_scheduler_init(scheduler) == CHATAI_OK);
    EXPECT(chatai_scheduler_tick(scheduler, buffer, sizeof buffer, &length) == CHATAI_OK);
    EXPECT(length == strlen(buffer));
    EXPECT(strstr(buffer, "\"submitted\":0") != NULL);
    EXPECT(strstr(buffer, "\"unknown_listings\":[]") != NULL);
    EXPECT(chatai_scheduler_tick(scheduler, small, 1, &length) == CHATAI_ERROR_OUT_OF_RANGE); /* the tick ran */
    EXPECT(small[0] == '\0' && length > 0);
    EXPECT(chatai_scheduler_tick(scheduler, NULL, 4, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);

    EXPECT(chatai_scheduler_status(scheduler, NULL, 0, &needed) == CHATAI_OK);
    EXPECT(chatai_scheduler_status(scheduler, small, sizeof small, &length) == CHATAI_ERROR_OUT_OF_RANGE);
    EXPECT(length == needed);
    EXPECT(strlen(small) == sizeof small - 1);
    EXPECT(strncmp(small, "{\"last_", 7) == 0);
    EXPECT(chatai_scheduler_status(scheduler, buffer, sizeof buffer, &length) == CHATAI_OK);
    EXPECT(length == needed && strlen(buffer) == needed);
    EXPECT(strstr(buffer, "\"last_tick_ms\":0") == NULL);
    EXPECT(strstr(buffer, "\"id\":\"chat\"") != NULL);
    EXPECT(strstr(buffer, "\"target\":0") != NULL);
    EXPECT(strstr(buffer, "\"jobs\":[]") != NULL);
  }
  chatai_scheduler_free(scheduler);
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* One tunnel request's answer, collected by its callbacks on the tunnel's I/O thread. */
struct answer {
  pthread_mutex_t mutex;
  pthread_cond_t ended_cond;
  char data[65536];
  size_t length;
  size_t pieces;
  int ended;
  int end_calls;
  chatai_status status;
  char message[256];
  int cancel_after_first; /* the data callback asks to stop after the first piece */
};

static void answer_init(struct answer *a) {
  memset(a, 0, sizeof *a);
  pthread_mutex_init(&a->mutex, NULL);
  pthread_cond_init(&a->ended_cond, NULL);
}

static void answer_destroy(struct answer *a) {
  pthread_mutex_destroy(&a->mutex);
  pthread_cond_destroy(&a->ended_cond);
}

static int on_tunnel_data(const char *data, size_t len, void *user) {
  struct answer *a = (struct answer *)user;
  size_t room;
  pthread_mutex_lock(&a->mutex);
  room = sizeof a->data - 1 - a->length;
  if (len < room) room = len;
  memcpy(a->data + a->length, data, room);
  a->length += room;
  a->data[a->length] = '\0';
  ++a->pieces;
  pthread_mutex_unlock(&a->mutex);
  return a->cancel_after_first;
}

static void on_tunnel_end(chatai_status status, const char *message, void *user) {
  struct answer *a = (struct answer *)user;
  pthread_mutex_lock(&a->mutex);
  a->status = status;
  snprintf(a->message, sizeof a->message, "%s", message);
  a->ended = 1;
  ++a->end_calls;
  pthread_cond_broadcast(&a->ended_cond);
  pthread_mutex_unlock(&a->mutex);
}

/* Waits up to `seconds` for the end callback; returns whether it ran. */
static int answer_wait(struct answer *a, int seconds) {
  struct timespec deadline;
  int ended;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += seconds;
  pthread_mutex_lock(&a->mutex);
  while (!a->ended && pthread_cond_timedwait(&a->ended_cond, &a->mutex, &deadline) == 0) {
  }
  ended = a->ended;
  pthread_mutex_unlock(&a->mutex);
  return ended;
}

/* Tunnel: the local transport running the real chatai-gate over a state directory whose service
 * "chat" is the real model served in-process (when the test model is installed): a streamed
 * chat completion, an unknown service answered 404 by the gate, cancelling from the data
 * callback and from another thread, status, keep-alive, health and the argument checks. */
static void test_tunnel(void) {
  static const char secret[] = "capi-tunnel-secret-0123456789abcdef";
  static const char chat_body[] =
      "{\"model\":\"smol\",\"stream\":true,\"max_tokens\":4,\"temperature\":0,"
      "\"messages\":[{\"role\":\"user\",\"content\":\"Say hi\"}]}";
  static const char long_body[] =
      "{\"model\":\"smol\",\"stream\":true,\"max_tokens\":200,\"messages\":[{\"role\":\"user\",\"content\":\"Count\"}]}";
  const char *header_names[] = {"content-type"};
  const char *header_values[] = {"application/json"};
  char dir[] = "/tmp/chatai-capi-tunnel-XXXXXX";
  char path[512], text[2048], status_doc[8192], small[4];
  size_t length = 0, needed = 0;
  chatai_tunnel_local_options local = CHATAI_TUNNEL_LOCAL_OPTIONS_INIT;
  chatai_tunnel_ssh_options ssh = CHATAI_TUNNEL_SSH_OPTIONS_INIT;
  chatai_tunnel_request_options req = CHATAI_TUNNEL_REQUEST_OPTIONS_INIT;
  chatai_tunnel_health health = CHATAI_TUNNEL_HEALTH_INIT;
  chatai_server_options server_opts = CHATAI_SERVER_OPTIONS_INIT;
  chatai_server *server = NULL;
  chatai_tunnel *tunnel = NULL;
  chatai_tunnel_stream *stream = NULL;
  struct answer a;
  struct timespec ten_ms = {0, 10000000};
  int port = 1, tries;

  EXPECT(local.version == CHATAI_TUNNEL_LOCAL_OPTIONS_VERSION && local.gate_program == NULL);
  EXPECT(ssh.version == CHATAI_TUNNEL_SSH_OPTIONS_VERSION && ssh.port == 22 && ssh.sessions == 0);
  EXPECT(req.version == CHATAI_TUNNEL_REQUEST_OPTIONS_VERSION && req.body == NULL && req.window == 0);
  chatai_tunnel_free(NULL);
  chatai_tunnel_stream_free(NULL);
  EXPECT(chatai_tunnel_create_local(NULL, &local) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_create_local(&tunnel, &local) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "gate_program") != NULL);
  EXPECT(tunnel == NULL);
  EXPECT(chatai_tunnel_create_ssh(&tunnel, &ssh) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "host") != NULL);
  ssh.host = "127.0.0.1";
  ssh.user = "nobody";
  ssh.key_file = "/nonexistent/key";
  ssh.known_hosts = "/nonexistent/known_hosts";
  ssh.port = 70000;
  EXPECT(chatai_tunnel_create_ssh(&tunnel, &ssh) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "port") != NULL);
  ssh.port = 22;
  EXPECT(chatai_tunnel_create_ssh(&tunnel, &ssh) == CHATAI_ERROR_PERMISSION_DENIED);
  EXPECT(tunnel == NULL);
  EXPECT(chatai_tunnel_wait_connected(NULL, 0) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_request(NULL, &req, on_tunnel_data, on_tunnel_end, NULL, &stream) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(stream == NULL);
  EXPECT(chatai_tunnel_status(NULL, 0, NULL, 0, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_keep_alive(NULL, 0) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_get_health(NULL, &health) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_stream_cancel(NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_stream_consumed(NULL, 1) == CHATAI_ERROR_INVALID_ARGUMENT);

  /* The state directory: keys/, the backend's key and the registry. */
  EXPECT(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/state", dir);
  EXPECT(mkdir(path, 0700) == 0);
  snprintf(path, sizeof path, "%s/state/keys", dir);
  EXPECT(mkdir(path, 0700) == 0);
  EXPECT(write_file(dir, "state/keys/101.key", secret) == 0);
  snprintf(path, sizeof path, "%s/state/keys/101.key", dir);
  EXPECT(chmod(path, 0600) == 0);
  if (strlen(CHATAI_TEST_MODEL) > 0) {
    EXPECT(write_file(dir, "api.key", secret) == 0);
    snprintf(path, sizeof path, "%s/api.key", dir);
    EXPECT(chmod(path, 0600) == 0);
    server_opts.model_path = CHATAI_TEST_MODEL;
    server_opts.served_model_name = "smol";
    server_opts.context = 256;
    server_opts.threads = 1;
    server_opts.api_key_file = path;
    EXPECT(chatai_server_create(&server, &server_opts) == CHATAI_OK);
    if (server != NULL) port = chatai_server_port(server);
  }
  snprintf(text, sizeof text,
           "{\"version\":1,\"generation\":1,\"services\":[{\"id\":\"chat\",\"models\":[\"smol\"]}],"
           "\"backends\":[{\"job\":\"101\",\"service\":\"chat\",\"host\":\"127.0.0.1\",\"port\":%d,"
           "\"state\":\"ready\",\"key_file\":\"101.key\"}]}",
           port);
  EXPECT(write_file(dir, "state/registry.json", text) == 0);
  snprintf(path, sizeof path, "%s/state/registry.json", dir);
  EXPECT(chmod(path, 0600) == 0);
  snprintf(text, sizeof text, "{\"state_dir\":\"%s/state\"}", dir);
  EXPECT(write_file(dir, "gate.json", text) == 0);
  snprintf(path, sizeof path, "%s/gate.json", dir);

  local.gate_program = CHATAI_GATE_PROGRAM;
  local.gate_config = path;
  local.keep_alive_interval_ms = -1;
  EXPECT(chatai_tunnel_create_local(&tunnel, &local) == CHATAI_OK);
  if (tunnel == NULL) {
    chatai_server_free(server);
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return;
  }
  EXPECT(chatai_tunnel_wait_connected(tunnel, 1000) == CHATAI_OK);

  /* Bad request options: nothing starts and no callback runs. */
  answer_init(&a);
  EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, &stream) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "id") != NULL);
  req.id = "capi-1";
  req.service = "chat";
  req.body_len = 3;
  EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, &stream) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "body") != NULL);
  EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, NULL, &a, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  req.version = 99;
  EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  req.version = CHATAI_TUNNEL_REQUEST_OPTIONS_VERSION;
  EXPECT(stream == NULL && a.end_calls == 0);

  /* A service the registry does not know: the gate answers 404, and the request ends OK. */
  req.service = "nope";
  req.body = chat_body;
  req.body_len = strlen(chat_body);
  req.header_names = header_names;
  req.header_values = header_values;
  req.n_headers = 1;
  EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, NULL) == CHATAI_OK);
  EXPECT(answer_wait(&a, 10));
  EXPECT(a.status == CHATAI_OK && a.end_calls == 1);
  EXPECT(strncmp(a.data, "HTTP/1.1 404 ", 13) == 0);
  EXPECT(strstr(a.data, "\"error\"") != NULL);
  answer_destroy(&a);

  if (server != NULL) {
    /* The real model's streamed answer. */
    answer_init(&a);
    req.service = "chat";
    req.user = "c-user";
    EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, &stream) == CHATAI_OK);
    EXPECT(stream != NULL);
    EXPECT(answer_wait(&a, 60));
    EXPECT(a.status == CHATAI_OK && a.end_calls == 1);
    EXPECT(strncmp(a.data, "HTTP/1.1 200 ", 13) == 0);
    EXPECT(strstr(a.data, "text/event-stream") != NULL);
    EXPECT(strstr(a.data, "data: [DONE]") != NULL);
    EXPECT(chatai_tunnel_stream_consumed(stream, a.length) == CHATAI_OK);
    EXPECT(chatai_tunnel_stream_cancel(stream) == CHATAI_OK); /* ended already: nothing changes */
    chatai_tunnel_stream_free(stream);
    stream = NULL;
    EXPECT(a.end_calls == 1 && a.status == CHATAI_OK);
    answer_destroy(&a);

    /* Cancelled from the data callback. */
    answer_init(&a);
    a.cancel_after_first = 1;
    req.body = long_body;
    req.body_len = strlen(long_body);
    EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, NULL) == CHATAI_OK);
    EXPECT(answer_wait(&a, 60));
    EXPECT(a.status == CHATAI_ERROR_CANCELLED && a.end_calls == 1);
    EXPECT(a.pieces >= 1 && strstr(a.data, "data: [DONE]") == NULL);
    answer_destroy(&a);

    /* Cancelled through its handle from this thread. */
    answer_init(&a);
    EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, &stream) == CHATAI_OK);
    EXPECT(chatai_tunnel_stream_cancel(stream) == CHATAI_OK);
    EXPECT(answer_wait(&a, 10));
    EXPECT(a.status == CHATAI_ERROR_CANCELLED && a.end_calls == 1);
    chatai_tunnel_stream_free(stream);
    answer_destroy(&a);
  }

  EXPECT(chatai_tunnel_status(tunnel, 10000, NULL, 0, &needed) == CHATAI_OK);
  EXPECT(needed > 0);
  EXPECT(chatai_tunnel_status(tunnel, 10000, small, sizeof small, &length) == CHATAI_ERROR_OUT_OF_RANGE);
  EXPECT(length == needed && strlen(small) == sizeof small - 1);
  EXPECT(chatai_tunnel_status(tunnel, 10000, status_doc, sizeof status_doc, &length) == CHATAI_OK);
  EXPECT(strstr(status_doc, "\"id\":\"chat\"") != NULL);
  EXPECT(chatai_tunnel_status(tunnel, -1, status_doc, sizeof status_doc, &length) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_tunnel_keep_alive(tunnel, 10000) == CHATAI_OK);
  /* The counts are refreshed on the I/O thread's next round. */
  for (tries = 0; tries < 100; ++tries) {
    EXPECT(chatai_tunnel_get_health(tunnel, &health) == CHATAI_OK);
    if (health.requests_running == 0 && health.requests_queued == 0) break;
    nanosleep(&ten_ms, NULL);
  }
  EXPECT(health.sessions_up == 1 && health.requests_running == 0 && health.requests_queued == 0);
  health.version = 0;
  EXPECT(chatai_tunnel_get_health(tunnel, &health) == CHATAI_ERROR_INVALID_ARGUMENT);

  /* A request still running when the tunnel is freed ends with CHATAI_ERROR_CANCELLED. */
  answer_init(&a);
  if (server != NULL) {
    EXPECT(chatai_tunnel_request(tunnel, &req, on_tunnel_data, on_tunnel_end, &a, NULL) == CHATAI_OK);
    chatai_tunnel_free(tunnel);
    EXPECT(a.ended && a.end_calls == 1 && a.status == CHATAI_ERROR_CANCELLED);
  } else {
    chatai_tunnel_free(tunnel);
  }
  answer_destroy(&a);
  chatai_server_free(server);
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Gateway: refused options and configs, then one started from JSON text on a free port (its
 * transport runs a program that is no gate, so only /health would notice), stopped and freed. */
static void test_gateway(void) {
  char dir[] = "/tmp/chatai-capi-gateway-XXXXXX";
  char json[1024];
  chatai_gateway_options opts = CHATAI_GATEWAY_OPTIONS_INIT;
  chatai_gateway *gateway = NULL;

  chatai_gateway_free(NULL);
  EXPECT(chatai_gateway_port(NULL) == 0);
  EXPECT(chatai_gateway_start(NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gateway_stop(NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gateway_create(&gateway, NULL) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(chatai_gateway_create(&gateway, &opts) == CHATAI_ERROR_INVALID_ARGUMENT); /* neither path nor JSON */
  opts.config_path = "/nonexistent/chatai-gateway.json";
  EXPECT(chatai_gateway_create(&gateway, &opts) == CHATAI_ERROR_NOT_FOUND);
  EXPECT(gateway == NULL);

  EXPECT(mkdtemp(dir) != NULL);
  opts.config_path = NULL;
  snprintf(json, sizeof json,
           "{\"listen\": {\"port\": 0}, \"database\": \"%s/gateway.db\", \"limits\": {\"rpm\": 1}, "
           "\"transport\": {\"kind\": \"local\", \"gate_program\": \"/bin/true\", \"gate_config\": \"/dev/null\"}}",
           dir);
  opts.config_json = json;
  EXPECT(chatai_gateway_create(&gateway, &opts) == CHATAI_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(chatai_last_error(), "limits.rpm") != NULL);

  snprintf(json, sizeof json,
           "{\"listen\": {\"port\": 0}, \"database\": \"%s/gateway.db\", \"timeouts\": {\"shutdown_grace_ms\": 0}, "
           "\"transport\": {\"kind\": \"local\", \"gate_program\": \"/bin/true\", \"gate_config\": \"/dev/null\", "
           "\"keep_alive_interval_ms\": 0}}",
           dir);
  EXPECT(chatai_gateway_create(&gateway, &opts) == CHATAI_OK);
  if (gateway != NULL) {
    EXPECT(chatai_gateway_port(gateway) == 0);
    EXPECT(chatai_gateway_start(gateway) == CHATAI_OK);
    EXPECT(chatai_gateway_port(gateway) > 0);
    EXPECT(chatai_gateway_start(gateway) == CHATAI_ERROR_INVALID_ARGUMENT);
    EXPECT(chatai_gateway_stop(gateway) == CHATAI_OK);
    EXPECT(chatai_gateway_stop(gateway) == CHATAI_OK);
    EXPECT(chatai_gateway_port(gateway) == 0);
  }
  chatai_gateway_free(gateway);
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
  char expected[32];
  snprintf(expected, sizeof expected, "%d.%d.%d", CHATAI_VERSION_MAJOR, CHATAI_VERSION_MINOR, CHATAI_VERSION_PATCH);
  EXPECT(strcmp(chatai_version(), expected) == 0);
  EXPECT(strcmp(chatai_version(), CHATAI_VERSION_STRING) == 0);
  EXPECT(chatai_version_number() == CHATAI_VERSION_NUMBER);

  EXPECT(strcmp(chatai_status_string(CHATAI_OK), "ok") == 0);
  EXPECT(strcmp(chatai_status_string(CHATAI_ERROR_NOT_FOUND), "not_found") == 0);
  EXPECT(strcmp(chatai_status_string((chatai_status)999), "unknown") == 0);

  EXPECT(chatai_last_error() != NULL);
  chatai_clear_error();
  EXPECT(strcmp(chatai_last_error(), "") == 0);

  test_model_files();

  test_models();

  test_gate();

  test_server();

  test_scheduler();

  test_tunnel();
  test_gateway();

  if (failures == 0) printf("C ABI test passed\n");
  return failures == 0 ? 0 : 1;
}
