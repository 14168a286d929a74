/* Calls the C ABI from C99: version, status names, the last-error contract and model files. */
#include <stdio.h>
#include <string.h>

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

  test_gate();

  if (failures == 0) printf("C ABI test passed\n");
  return failures == 0 ? 0 : 1;
}
