// only-errors in JavaScript: an operator written as one function. Keeps the
// records whose value contains "error", unchanged (`map(fn)` is the same for
// a new value). The Rust version is plugins/only-errors.
import { filter } from "weir-sdk";

export default filter((record) => record.text.includes("error"));
