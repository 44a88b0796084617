/** The grant cannot be expressed within the provider's limits (a 422, before any backend call). */
export class PolicyTooLargeError extends Error {
  override readonly name = 'PolicyTooLargeError';
}
