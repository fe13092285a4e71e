/** Two projects: unit specs beside the code (the bench's too), e2e specs under test/. */
const moduleNameMapper = {
  '^@app/realtime(|/.*)$': '<rootDir>/libs/realtime/src$1',
  '^@app/client(|/.*)$': '<rootDir>/libs/client/src$1',
};
const transform = {
  '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.spec.json', diagnostics: false }],
};
module.exports = {
  testTimeout: 60000,
  projects: [
    {
      displayName: 'unit',
      testEnvironment: 'node',
      rootDir: __dirname,
      roots: ['<rootDir>/libs', '<rootDir>/src', '<rootDir>/bench'],
      testRegex: '.*\\.spec\\.ts$',
      transform,
      moduleNameMapper,
    },
    {
      displayName: 'e2e',
      testEnvironment: 'node',
      rootDir: __dirname,
      roots: ['<rootDir>/test'],
      testRegex: '.*\\.e2e-spec\\.ts$',
      transform,
      moduleNameMapper,
    },
  ],
};
