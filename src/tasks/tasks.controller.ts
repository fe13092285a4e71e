import {
  Body,
  Controller,
  Delete,
  Get,
  Headers,
  HttpCode,
  Param,
  Patch,
  Post,
  Query,
} from '@nestjs/common';
import { ApiOperation, ApiTags } from '@nestjs/swagger';
import type { AnyAbility } from '@casl/ability';
import { Authenticated, CurrentAbility, CurrentPrincipal, Principal } from '@app/realtime';
import { parseDeleteBody } from '../common/delete-body';
import { TasksService } from './tasks.service';

@ApiTags('tasks')
@Controller('api/tasks')
@Authenticated()
export class TasksController {
  constructor(private readonly tasks: TasksService) {}

  @Get()
  @ApiOperation({
    summary: 'List tasks: ?status=&assigneeId=&projectId=&priority=&department=&limit=&cursor=',
  })
  list(@CurrentAbility() ability: AnyAbility, @Query() query: Record<string, unknown>) {
    return this.tasks.list(ability, query);
  }

  @Post()
  @ApiOperation({ summary: 'Create a task (201 with the document)' })
  create(
    @CurrentPrincipal() principal: Principal,
    @CurrentAbility() ability: AnyAbility,
    @Body() body: unknown,
  ) {
    return this.tasks.create(principal, ability, body);
  }

  @Get(':id')
  get(@CurrentAbility() ability: AnyAbility, @Param('id') id: string) {
    return this.tasks.get(ability, id);
  }

  @Patch(':id')
  @ApiOperation({
    summary:
      'Update a task; `version` in the body or If-Match; 409 with the current document when stale',
  })
  update(
    @CurrentAbility() ability: AnyAbility,
    @Param('id') id: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch?: string,
  ) {
    return this.tasks.update(ability, id, body, ifMatch);
  }

  @Delete(':id')
  @HttpCode(204)
  @ApiOperation({ summary: 'Delete a task; `version` in the body or If-Match; 409 when stale' })
  async remove(
    @CurrentAbility() ability: AnyAbility,
    @Param('id') id: string,
    @Body() body: unknown,
    @Headers('if-match') ifMatch?: string,
  ): Promise<void> {
    await this.tasks.remove(ability, id, parseDeleteBody(body), ifMatch);
  }
}
