// The Asio adapter of a tunnel request: the transport's callbacks queue the answer under a
// mutex, and one drain at a time hands it to the consumer on its strand.
#include "chatai/tunnel/asio_stream.hpp"

#include <exception>
#include <utility>

#include <asio/post.hpp>

#include "chatai/core/log.hpp"

namespace chatai::tunnel {

asio_stream::asio_stream(const asio::any_io_executor& executor, asio_stream_callbacks callbacks)
    : strand_(asio::make_strand(executor)), callbacks_(std::move(callbacks)) {}

std::shared_ptr<asio_stream> asio_stream::start(transport& t, const asio::any_io_executor& executor,
                                                const gate_request& r, asio_stream_callbacks callbacks,
                                                request_options options) {
  auto self = std::make_shared<asio_stream>(executor, std::move(callbacks));
  if (options.window == 0) options.window = default_window;
  std::weak_ptr<asio_stream> weak = self;
  // Undelivered bytes are dropped as soon as the request is cancelled, whichever side fires.
  self->cancel_.token().on_cancel([weak] {
    if (auto s = weak.lock()) {
      std::lock_guard lock(s->mutex_);
      s->cancelled_ = true;
      s->pending_.clear();
    }
  });
  options.cancel.on_cancel([source = self->cancel_]() mutable { source.cancel(); });
  options.cancel = self->cancel_.token();
  auto s = t.request(r,
                     {[self](std::string_view bytes) { self->on_transport_data(bytes); },
                      [self](const status& outcome) { self->on_transport_end(outcome); }},
                     std::move(options));
  std::lock_guard lock(self->mutex_);
  self->stream_ = std::move(s);
  // Nothing was handed to the consumer before it could call consumed().
  if (!self->pending_.empty() || self->end_) self->post_drain_locked();
  return self;
}

void asio_stream::consumed(std::size_t bytes) {
  std::shared_ptr<stream> s;
  {
    std::lock_guard lock(mutex_);
    s = stream_;
  }
  if (s) s->consumed(bytes);
}

void asio_stream::cancel() { cancel_.cancel(); }

void asio_stream::on_transport_data(std::string_view bytes) {
  std::lock_guard lock(mutex_);
  if (cancelled_) return;
  pending_.append(bytes);
  if (stream_) post_drain_locked();
}

void asio_stream::on_transport_end(const status& outcome) {
  std::lock_guard lock(mutex_);
  end_ = outcome;
  if (stream_) post_drain_locked();
}

void asio_stream::post_drain_locked() {
  if (drain_posted_) return;
  drain_posted_ = true;
  asio::post(strand_, [self = shared_from_this()] { self->drain(); });
}

void asio_stream::drain() {
  for (;;) {
    std::string data;
    std::optional<status> end;
    {
      std::lock_guard lock(mutex_);
      if (!pending_.empty()) {
        data.swap(pending_);
      } else if (end_) {
        end = std::move(end_);
        end_.reset();
      } else {
        drain_posted_ = false;
        return;
      }
    }
    try {
      if (end) {
        auto on_end = std::move(callbacks_.on_end);
        callbacks_ = {};
        if (on_end) on_end(*end);
      } else if (callbacks_.on_data) {
        callbacks_.on_data(std::move(data));
      }
    } catch (const std::exception& e) {
      log::error("tunnel: an Asio stream callback failed", {{"error", e.what()}});
      cancel();
    }
  }
}

}  // namespace chatai::tunnel
