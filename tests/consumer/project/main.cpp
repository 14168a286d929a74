// Uses the installed C++ API.
#include <chatai/core/json.hpp>
#include <cstdio>

int main() {
  auto doc = chatai::json::parse(R"({"ok":true})");
  if (!doc || !(*doc)["ok"].GetBool()) return 1;
  std::puts("consumer (C++) ok");
  return 0;
}
