// Tests of the model list: states from the gate's status document, and one entry per model.
#include <doctest/doctest.h>

#include "chatai/gateway/models.hpp"

using namespace chatai;
using namespace chatai::gateway;

TEST_CASE("each model gets the state of its service") {
  const auto status = R"({"v":1,"generation":3,"services":[
    {"id":"chat","models":["smol","smol-alias"],"can_scale_from_zero":true,
     "backends":{"ready":1,"starting":0,"draining":0},"open_breakers":0,"in_flight":2},
    {"id":"big","models":["llama-70b"],"can_scale_from_zero":false,
     "backends":{"ready":0,"starting":2,"draining":0},"open_breakers":0,"in_flight":0},
    {"id":"idle","models":["tiny"],"can_scale_from_zero":true,
     "backends":{"ready":0,"starting":0,"draining":1},"open_breakers":0,"in_flight":0}]})";
  auto models = models_from_status(status);
  REQUIRE(models);
  REQUIRE(models->size() == 4);
  CHECK((*models)[0].model == "llama-70b");
  CHECK((*models)[0].state == model_state::starting);
  CHECK((*models)[0].service == "big");
  CHECK((*models)[1].model == "smol");
  CHECK((*models)[1].state == model_state::ready);
  CHECK((*models)[2].model == "smol-alias");
  CHECK((*models)[3].model == "tiny");
  CHECK((*models)[3].state == model_state::offline);
  CHECK(to_string(model_state::starting) == "starting");
}

TEST_CASE("a service whose job is submitted but not yet placed is starting") {
  const auto status = R"({"services":[
    {"id":"a","models":["m"],"backends":{"ready":0,"starting":0,"draining":0,"pending":1}},
    {"id":"b","models":["n"],"backends":{"ready":0,"starting":0,"draining":0,"pending":0}}]})";
  auto models = models_from_status(status);
  REQUIRE(models);
  REQUIRE(models->size() == 2);
  CHECK((*models)[0].state == model_state::starting);
  CHECK((*models)[1].state == model_state::offline);
}

TEST_CASE("a model of several services is listed once, with the best one") {
  const auto status = R"({"services":[
    {"id":"a","models":["m"],"backends":{"ready":0,"starting":1}},
    {"id":"b","models":["m"],"backends":{"ready":2,"starting":0}},
    {"id":"c","models":["m"],"backends":{"ready":1,"starting":0}}]})";
  auto models = models_from_status(status);
  REQUIRE(models);
  REQUIRE(models->size() == 1);
  CHECK((*models)[0].service == "b");
  CHECK((*models)[0].state == model_state::ready);
}

TEST_CASE("a malformed status document is an error") {
  CHECK(!models_from_status("not json"));
  CHECK(!models_from_status("{}"));
  auto bad = models_from_status(R"({"services":[{"models":["m"]}]})");
  REQUIRE(!bad);
  CHECK(bad.err().message().find("services[0].id") != std::string::npos);
  auto empty = models_from_status(R"({"services":[]})");
  REQUIRE(empty);
  CHECK(empty->empty());
}

TEST_CASE("a status document nested without bound is refused, not recursed into") {
  const std::string hostile = R"({"v":1,"generation":1,"services":)" + std::string(300000, '[') +
                              std::string(300000, ']') + "}";
  auto models = models_from_status(hostile);
  REQUIRE_FALSE(models);
  CHECK(models.err().message().find("nested deeper than 128 levels") != std::string::npos);
}
