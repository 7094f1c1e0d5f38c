// Package testutil holds helpers shared by Coil's tests: the root gate for privileged
// tests and throwaway network namespaces.
package testutil
