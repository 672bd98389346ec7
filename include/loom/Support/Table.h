//===- Table.h - aligned text tables for the CLI ----------------*- C++ -*-===//
#ifndef LOOM_SUPPORT_TABLE_H
#define LOOM_SUPPORT_TABLE_H

#include <string>
#include <vector>

namespace loom {

/// A table of text cells printed with aligned columns. Columns whose header is
/// given with a leading '>' are right-aligned (numbers), e.g. ">params".
class Table {
public:
  explicit Table(std::vector<std::string> headers);
  void addRow(std::vector<std::string> cells);
  std::string render() const;

private:
  std::vector<std::string> headers_;
  std::vector<bool> rightAligned_;
  std::vector<std::vector<std::string>> rows_;
};

/// 70553706496 -> "70.55B"; 124439808 -> "124.4M".
std::string humanCount(double n);
/// Bytes with binary units: 85899345920 -> "80.0 GiB".
std::string humanBytes(double bytes);
/// Bytes as a bare GiB figure for table columns: gib(85899345920, 2) -> "80.00".
std::string gib(double bytes, int decimals);

} // namespace loom

#endif // LOOM_SUPPORT_TABLE_H
