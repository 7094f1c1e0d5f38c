// Package testutil holds helpers shared by Coil's tests: the root gate for privileged
// tests, throwaway network namespaces, subprocesses a test starts and stops (Proc) and
// the output buffer they share with it.
package testutil
