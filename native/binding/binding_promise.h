// binding_promise.h: run a dataplane call off the JS thread and settle a
// promise with its result. One template for every asynchronous export:
//
//   exec(state)                  on a libuv pool thread; returns a count or
//                                value >= 0, or a negative errno
//   convert(env, state, ret)     on the JS thread, ret >= 0: the resolved value
//   message(state, ret)          on the JS thread, ret < 0: the Error's text
//                                ("" = strerror)
//
// state is moved into the worker and lives until the promise settles, so
// exec may write results into it (buffers, cursors) for convert to read.
// exec must not touch JS values; convert and message run where they may.
#ifndef RETRACE_BINDING_PROMISE_H
#define RETRACE_BINDING_PROMISE_H

#include <napi.h>

#include <cstdint>
#include <string>
#include <utility>

#include "binding.h"

namespace retrace_js {

template <typename State, typename Exec, typename Convert, typename Message>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, State state, Exec exec, Convert convert, Message message)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        state_(std::move(state)),
        exec_(exec),
        convert_(convert),
        message_(message) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { ret_ = static_cast<int64_t>(exec_(state_)); }

  void OnOK() override {
    if (ret_ < 0)
      deferred_.Reject(ErrnoError(Env(), static_cast<int>(ret_), message_(state_, ret_)).Value());
    else
      deferred_.Resolve(convert_(Env(), state_, ret_));
  }

  void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  State state_;
  Exec exec_;
  Convert convert_;
  Message message_;
  int64_t ret_ = 0;
};

// Queue the work and return its promise (the worker deletes itself).
template <typename State, typename Exec, typename Convert, typename Message>
Napi::Promise RunPromise(Napi::Env env, State state, Exec exec, Convert convert, Message message) {
  auto *w = new PromiseWorker<State, Exec, Convert, Message>(env, std::move(state), exec, convert, message);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace retrace_js

#endif
