//===- Tensor.h - host tensors and errors for the kiln runtime --*- C++ -*-===//
//
// The runtime's public value types. No MLIR/LLVM here: deployment links only
// the runtime library.
//
//===----------------------------------------------------------------------===//
#ifndef KILN_RUNTIME_TENSOR_H
#define KILN_RUNTIME_TENSOR_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln::runtime {

/// The outcome of a runtime call: success, or a message that names what is
/// wrong (the tensor, the field, the byte offset).
/// The length of the UTF-8 sequence at `s[i]` — a lead byte and the
/// continuation bytes it announces, as llama2.c reads text — or 0 when it is
/// malformed.
size_t utf8Length(const std::string &s, size_t i);

/// Text that is safe to print: valid UTF-8 with no control characters but
/// newlines and tabs. Other bytes (from a damaged file, say) become \xNN.
std::string printable(std::string text);

/// An option in a message, as each front end spells it: `cli` on the
/// command line ("--grad=loss"), `python` in Python ("grad=\"loss\""). The
/// libraries' errors that point to an option say it this way, so that a
/// Python user is never told about a command-line flag (and the reverse);
/// spellOptions picks the spelling.
std::string optionRef(const std::string &cli, const std::string &python);
/// `text` with each optionRef in it spelled for Python, or for the
/// command line.
std::string spellOptions(const std::string &text, bool python);

class Status {
public:
  static Status ok() { return Status(); }
  /// Messages quote names and strings read from inputs, which may hold any
  /// bytes: they are made printable here, once for every error.
  /// Options in the message (optionRef) are spelled for each front end.
  static Status error(std::string message) {
    Status s;
    s.message_ = printable(spellOptions(message, false));
    if (message.find(kOptionRefStart) != std::string::npos)
      s.pythonMessage_ = printable(spellOptions(message, true));
    s.failed_ = true;
    return s;
  }
  bool isOk() const { return !failed_; }
  explicit operator bool() const { return !failed_; }
  /// The message, options spelled for the command line (and C++).
  const std::string &message() const { return message_; }
  /// The message, options spelled for Python.
  const std::string &pythonMessage() const {
    return pythonMessage_.empty() ? message_ : pythonMessage_;
  }
  /// The message with both spellings (an optionRef of the two), to pass
  /// into another message that a front end spells later (a compile error).
  std::string text() const {
    return pythonMessage_.empty() ? message_
                                  : optionRef(message_, pythonMessage_);
  }
  /// What optionRef's text starts with.
  static constexpr char kOptionRefStart = '\x1e';

private:
  std::string message_, pythonMessage_;
  bool failed_ = false;
};

/// Element types; the values match kart.fbs's DType (append only). U8 and
/// I8 hold quantized weights' codes, not values kernels compute with.
enum class DType : int8_t { F32 = 0, F16, BF16, F64, I32, I64, Bool, U8, I8 };

size_t dtypeSize(DType t);
const char *dtypeName(DType t);

/// std::allocator, except that resizing leaves new elements uninitialized
/// (a tensor about to be overwritten is not zeroed first).
template <typename T> struct DefaultInitAllocator : std::allocator<T> {
  template <typename U> struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U> &) noexcept {}
  template <typename U> void construct(U *p) {
    ::new (static_cast<void *>(p)) U;
  }
  template <typename U, typename... Args> void construct(U *p, Args &&...args) {
    ::new (static_cast<void *>(p)) U(std::forward<Args>(args)...);
  }
};

/// A dense, row-major host tensor that owns its bytes.
class Tensor {
public:
  Tensor() = default;
  /// Zero-filled.
  Tensor(DType dtype, std::vector<int64_t> shape);
  /// With storage whose contents are unspecified: for results the caller
  /// writes in full.
  static Tensor uninitialized(DType dtype, std::vector<int64_t> shape);
  /// A tensor over memory it does not own (row-major, `data` valid for as
  /// long as the tensor is used): inputs passed without a copy. Copies of a
  /// view are views of the same memory.
  static Tensor view(DType dtype, std::vector<int64_t> shape, void *data);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t> &shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t numel() const;
  size_t bytes() const {
    return static_cast<size_t>(numel()) * dtypeSize(dtype_);
  }
  /// False for a view of memory the tensor does not own.
  bool ownsStorage() const { return !view_; }
  /// Whether storage for every element exists (false for a default Tensor).
  bool allocated() const { return view_ || data_.size() == bytes(); }
  void *data() { return view_ ? view_ : data_.data(); }
  const void *data() const { return view_ ? view_ : data_.data(); }
  template <typename T> T *as() { return reinterpret_cast<T *>(data()); }
  template <typename T> const T *as() const {
    return reinterpret_cast<const T *>(data());
  }

  /// "f32[2, 8, 768]".
  std::string describe() const;

private:
  DType dtype_ = DType::F32;
  std::vector<int64_t> shape_;
  std::vector<uint8_t, DefaultInitAllocator<uint8_t>> data_;
  void *view_ = nullptr; // set for views; data_ is then empty
};

std::string shapeString(DType dtype, const std::vector<int64_t> &shape);

} // namespace kiln::runtime

#endif
